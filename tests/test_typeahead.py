"""Typing ahead: the rest of the last completion, while the user types what it predicted."""

from dlm_lsp.postprocess import Scored
from dlm_lsp.typeahead import Shown, typed_ahead

DOC = "def mean(xs):\n    total = \n    return total\n"
CURSOR = DOC.index("total = ") + len("total = ")
SHOWN = Shown(DOC, CURSOR, (Scored("sum(xs)", 0.9), Scored("sum(x for x in xs)", 0.5),
                            Scored("0", 0.2)))


def typed(chars: str) -> tuple[str, int]:
    return DOC[:CURSOR] + chars + DOC[CURSOR:], CURSOR + len(chars)


def test_typed_characters_are_removed_from_every_candidate_that_starts_with_them():
    text, offset = typed("sum(")
    rest = typed_ahead(SHOWN, text, offset)
    assert [(c.text, c.confidence) for c in rest] == [("xs)", 0.9), ("x for x in xs)", 0.5)]


def test_typing_that_leaves_the_suggestion_or_finishes_it_gives_nothing():
    assert typed_ahead(SHOWN, *typed("max(")) is None
    assert typed_ahead(SHOWN, *typed("0")) is None  # nothing left to add
    assert typed_ahead(SHOWN, DOC, CURSOR) is None  # not a continuation: same place
    assert typed_ahead(None, *typed("s")) is None


def test_an_edit_anywhere_else_invalidates_the_suggestion():
    text, offset = typed("s")
    assert typed_ahead(SHOWN, text, offset) is not None
    # same lengths, so only the comparison of the two sides can tell
    assert typed_ahead(SHOWN, text.replace("mean", "mode"), offset) is None
    assert typed_ahead(SHOWN, text.replace("return total", "return TOTAL"), offset) is None
    assert typed_ahead(SHOWN, text + "# more\n", offset) is None


def test_a_cursor_that_moved_without_typing_gives_nothing():
    text, _ = typed("su")
    assert typed_ahead(SHOWN, text, CURSOR + 1) is None
