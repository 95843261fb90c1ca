"""Reuse across keystrokes: typing ahead into the last completion, and far edits below."""

from dlm_lsp.pipeline.postprocess import Scored
from dlm_lsp.pipeline.typeahead import Shown, far_suffix_edit, typed_ahead

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


BELOW = "def mean(xs):\n    total = \n    return total\n\n\ndef other():\n    return 1\n"
AT = BELOW.index("total = ") + len("total = ")
SHOWN_BELOW = Shown(BELOW, AT, (Scored("sum(xs)", 0.9),))


def test_an_edit_beyond_the_near_lines_serves_the_last_completion_again():
    edited = BELOW.replace("return 1", "return 2")  # 5 lines below the cursor's line
    assert [c.text for c in far_suffix_edit(SHOWN_BELOW, edited, AT, 4)] == ["sum(xs)"]
    assert far_suffix_edit(SHOWN_BELOW, edited, AT, 5) is None  # now within the near lines
    assert far_suffix_edit(SHOWN_BELOW, edited, AT, 0) is None  # off


def test_edits_near_or_before_the_cursor_or_a_moved_cursor_ask_the_model_again():
    near = BELOW.replace("return total", "return TOTAL")  # the next line
    assert far_suffix_edit(SHOWN_BELOW, near, AT, 3) is None
    same_line = BELOW.replace("total = \n", "total = 0\n")
    assert far_suffix_edit(SHOWN_BELOW, same_line, AT, 3) is None
    before = BELOW.replace("mean", "mode")
    assert far_suffix_edit(SHOWN_BELOW, before, AT, 3) is None
    assert far_suffix_edit(SHOWN_BELOW, BELOW + "x\n", AT - 1, 3) is None
    # an unchanged document is the response cache's job, not this one's
    assert far_suffix_edit(SHOWN_BELOW, BELOW, AT, 3) is None
    assert far_suffix_edit(None, BELOW + "x\n", AT, 3) is None


def test_inserting_a_line_between_the_near_lines_moves_them_and_is_noticed():
    inserted = BELOW.replace("    return total\n", "    return total\n    pass\n")
    assert far_suffix_edit(SHOWN_BELOW, inserted, AT, 1) is not None  # the 2nd line after
    assert far_suffix_edit(SHOWN_BELOW, inserted, AT, 2) is None
