"""Engine and Instant Edit functions with the parrot checkpoint (its output is known)."""

import threading

import pytest

from dlm_lsp.config import Settings
from dlm_lsp.model.sampler import Cancelled
from dlm_lsp.pipeline import edits
from dlm_lsp.pipeline.engine import Engine, ModelError
from dlm_lsp.pipeline.syntax import HOLE_MARKER


def test_line_completion_fills_the_slots_and_reports_figures(parrot_engine):
    text = "x = \n"
    out = parrot_engine.complete(text, 4, "python")
    assert out.plan.mode == "line"
    assert [c.text for c in out.candidates] == ["11111111"]
    assert out.stats.forward_passes == 1 and out.stats.tokens == 8


def test_block_completion_is_indented_under_the_opener(parrot_engine):
    text = "def f(x):\n    \n"
    out = parrot_engine.complete(text, len("def f(x):\n    "), "python")
    assert out.plan.mode == "block"
    assert out.candidates[0].text == "1" * 12  # one line, after the cursor's own indentation


def test_a_line_or_a_blank_line_gets_the_blank_tokens_and_a_block_elsewhere_none(
        parrot_engine):
    model = parrot_engine.load()
    assert model.blank_ids and all(not model.token_texts[i].strip() for i in model.blank_ids)
    assert set(model.newline_ids) & set(model.blank_ids)  # a bare line break is blank
    for mode in ("line", "block"):
        assert parrot_engine.mode_config(mode, model, blank_line=True).blank_ids == model.blank_ids
    assert parrot_engine.mode_config("line", model).blank_ids == model.blank_ids
    assert parrot_engine.mode_config("block", model).blank_ids == ()


def test_only_a_block_on_a_blank_line_must_be_whole_lines(parrot_engine):
    model = parrot_engine.load()
    assert parrot_engine.mode_config("block", model, blank_line=True).line_ids == model.newline_ids
    assert parrot_engine.mode_config("block", model).line_ids == ()
    assert parrot_engine.mode_config("line", model, blank_line=True).line_ids == ()
    assert parrot_engine.mode_config("span", model, blank_line=True).line_ids == ()
    block = parrot_engine.mode_config("block", model, blank_line=True, column=8)
    assert block.block_column == 8
    assert parrot_engine.mode_config("line", model, blank_line=True, column=8).block_column == 0


def test_identical_requests_come_from_the_cache(parrot_engine):
    text = "y = \n"
    parrot_engine.complete(text, 4, "python")
    runs = parrot_engine.model_runs
    again = parrot_engine.complete(text, 4, "python")
    assert parrot_engine.model_runs == runs and again.stats.cached
    assert parrot_engine.cache.hits >= 1


def test_typing_the_start_of_the_suggestion_serves_the_rest_without_a_model_run(parrot_engine):
    text = "z = \n"
    first = parrot_engine.complete(text, 4, "python")
    assert first.candidates[0].text == "11111111"
    runs = parrot_engine.model_runs
    typed = "z = 11\n"
    rest = parrot_engine.complete(typed, 6, "python")
    assert [c.text for c in rest.candidates] == ["111111"]
    assert parrot_engine.model_runs == runs and rest.stats.forward_passes == 0
    # typing something else asks the model again
    other = parrot_engine.complete("z = 2\n", 5, "python")
    assert parrot_engine.model_runs == runs + 1 and other.stats.forward_passes >= 1


def test_an_edit_far_below_the_cursor_serves_the_last_completion_when_enabled(parrot_checkpoint):
    engine = Engine(Settings(model=str(parrot_checkpoint), suffix_reuse_lines=2))
    text = "z = \nb = 1\nc = 2\nd = 3\n"
    first = engine.complete(text, 4, "python")
    runs = engine.model_runs
    far = engine.complete(text.replace("d = 3", "d = 4"), 4, "python")
    assert engine.model_runs == runs and far.stats.forward_passes == 0
    assert [c.text for c in far.candidates] == [c.text for c in first.candidates]
    near = engine.complete(text.replace("b = 1", "b = 5"), 4, "python")
    assert engine.model_runs == runs + 1 and near.stats.forward_passes >= 1
    engine.forget()  # a benchmark's fresh start: nothing is reused
    engine.complete(text.replace("d = 3", "d = 6"), 4, "python")
    assert engine.model_runs == runs + 2


def test_a_set_cancel_event_stops_the_run(parrot_checkpoint):
    engine = Engine(Settings(model=str(parrot_checkpoint), confidence_threshold=1.0))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine.complete("x = \n", 4, "python", cancel=cancel)


def test_missing_embedded_model_raises_a_message_that_says_what_to_set(tmp_path):
    engine = Engine(Settings(model=str(tmp_path / "nowhere")))
    with pytest.raises(ModelError, match='Set the "model" setting'):
        engine.load()
    assert engine.state == "error"


def test_fill_holes_replaces_every_hole_in_one_run(parrot_engine):
    text = (
        "def a():\n    ...\n\n"
        "def b():\n    # TODO: return something\n\n"
        f"z = {HOLE_MARKER}\n"
    )
    runs = parrot_engine.model_runs
    found = edits.fill_holes(parrot_engine, text, "python")
    assert parrot_engine.model_runs == runs + 1
    assert [text[e.start:e.end] for e in found] == ["...", "# TODO: return something",
                                                      HOLE_MARKER]
    assert [e.text for e in found] == ["1" * 12, "1" * 12, "1" * 8]


def test_a_filled_block_hole_ends_where_the_fill_leaves_the_block(parrot_engine, monkeypatch):
    from dlm_lsp.model.sampler import Candidate, SampleResult

    text = "class A:\n    def a(self):\n        ...\n"
    model = parrot_engine.load()
    fill = model.encode("return 1\n\n    def b(self):\n        return 2")
    monkeypatch.setattr(parrot_engine, "run", lambda pieces, *a, **k: (
        SampleResult([Candidate([fill], [[1.0] * len(fill)])], 1, 1), None))
    found = edits.fill_holes(parrot_engine, text, "python")
    assert [(text[e.start:e.end], e.text) for e in found] == [("...", "return 1")]


def test_instant_edit_regenerates_the_selection_with_the_instruction_in_context(parrot_engine):
    text = "a = 1\nb = compute(a)\nc = 3\n"
    start, end = text.index("compute(a)"), text.index("\nc")
    seen = []
    run = parrot_engine.run
    parrot_engine.run = lambda pieces, *a, **k: seen.append(pieces) or run(pieces, *a, **k)
    edit = edits.instant_edit(parrot_engine, text, "python", start, end, "use a constant")
    assert edit is not None and (edit.start, edit.end) == (start, end)
    assert set(edit.text) == {"1"}
    prefix = parrot_engine.model.decode(list(seen[0][0]))
    assert prefix.endswith("a = 1\n# use a constant\nb = ")


def test_repair_replaces_the_broken_line_with_code_that_parses(parrot_engine):
    text = "def f(x):\n    return x\n\ny = (1 +\n"
    fix = edits.repair(parrot_engine, text, "python", text.index("y"), len(text))
    assert fix is not None and text[fix.start:fix.end] == "y = (1 +"
    assert set(fix.text) == {"1"}


def test_repair_is_not_offered_without_a_syntax_error(parrot_engine):
    assert edits.repair(parrot_engine, "x = 1\n", "python", 0, 5) is None


def test_fill_holes_far_apart_are_left_for_a_later_run(parrot_engine):
    filler = "x = 1\n" * 2000  # far more code between the holes than the context budget
    text = f"def a():\n    ...\n{filler}def b():\n    ...\n"
    found = edits.fill_holes(parrot_engine, text, "python")
    assert len(found) == 1 and found[0].start == text.index("...")


def test_instant_edit_refuses_a_huge_selection(parrot_engine):
    text = "y = 2\n" * 10_000
    assert edits.instant_edit(parrot_engine, text, "python", 0, len(text)) is None


def test_changing_the_model_setting_loads_the_new_model(parrot_checkpoint, random_checkpoint):
    engine = Engine(Settings(model=str(parrot_checkpoint)))
    assert engine.load().path == parrot_checkpoint
    engine.update_settings(Settings(model=str(random_checkpoint)))
    assert engine.state == "idle" and len(engine.cache) == 0
    assert engine.load().path == random_checkpoint


def _writes(engine: Engine, monkeypatch, out: str) -> None:
    """Make the model write `out` into the span, whatever it is asked."""
    real_run = engine.run

    def run(pieces, cancel=None, cfg=None):
        result, stats = real_run(pieces, cancel, cfg)
        ids = engine.load().encode(out)
        result.candidates[0].spans[0] = ids
        return result, stats
    monkeypatch.setattr(engine, "run", run)


WHOLE_LINE = ("def mean(values):\n    if not values:\n        return 0.0\n"
              "    total = 0.0\n    for v in values:\n        total += v\n    return total\n")


@pytest.mark.parametrize("sel", ["    total = 0.0", "    total = 0.0\n", "total = 0.0"])
def test_instant_edit_of_a_whole_line_keeps_its_indentation_and_line_break(
        parrot_engine, monkeypatch, sel):
    _writes(parrot_engine, monkeypatch, "total = 0")
    start = WHOLE_LINE.index(sel)
    edit = edits.instant_edit(parrot_engine, WHOLE_LINE, "python", start, start + len(sel))
    assert edit is not None
    out = WHOLE_LINE[:edit.start] + edit.text + WHOLE_LINE[edit.end:]
    assert out == WHOLE_LINE.replace("    total = 0.0\n", "    total = 0\n")


def test_edit_checks_weigh_how_much_code_an_error_covers():
    from dlm_lsp.pipeline.engine import insertion_checker

    text = "def f(values):\n    total = 0.0\n    return total +\n"
    start = text.index("total = 0.0")
    errors, baseline = insertion_checker(text, start, start + 11, "python", extent=True)
    assert baseline[0] >= 1 and baseline[1] > 0  # the unfinished last line
    assert errors("total = 0") == baseline
    assert errors("total = 0.0 +") > baseline
