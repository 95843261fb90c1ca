import pytest

from dlm_lsp.pipeline.postprocess import (
    Scored,
    cut_repeated_suffix,
    finish_candidate,
    first_line,
    rank,
    reindent,
    repetitive,
    suffix_overlap_variants,
    trim_until_parses,
)
from dlm_lsp.pipeline.syntax import SpanPlan


def no_errors(_: str) -> int:
    return 0


def test_first_line_cuts_at_any_line_break():
    assert first_line("a\r\nb") == "a" and first_line("a\rb") == "a" and first_line("ab") == "ab"


def test_suffix_overlap_variant_drops_the_repeated_closing_text():
    assert suffix_overlap_variants("bar(x))", "))") [0] == "bar(x"
    assert suffix_overlap_variants("abc", "") == ["abc"]


def test_line_mode_prefers_the_variant_that_parses():
    plan = SpanPlan("line", "", "print(", ")")
    # "len(x)" + ")" would close twice; the parse check picks the right variant each time
    errors = lambda c: abs(("print(" + c + ")").count("(") - ("print(" + c + ")").count(")"))  # noqa: E731
    assert finish_candidate("len(x)", plan, "", errors, 1) == "len(x)"
    assert finish_candidate("len(x))", plan, "", errors, 1) == "len(x)"


def test_candidate_equal_to_the_rest_of_the_line_is_dropped():
    plan = SpanPlan("line", "", "x = ", "foo()")
    assert finish_candidate("foo()", plan, "", no_errors, 0) is None


def test_block_stops_where_it_repeats_the_following_code():
    suffix = "\n    return total\n"
    raw = "    total = sum(xs)\n    return total\n"
    assert cut_repeated_suffix(raw, suffix) == "    total = sum(xs)\n"


def test_a_block_ends_where_a_line_is_indented_less_than_the_cursor():
    from dlm_lsp.pipeline.postprocess import cut_at_dedent

    raw = "total = 0\n        for x in xs:\n            total += x\n\n    def next(self):\n"
    assert cut_at_dedent(raw, 8) == "total = 0\n        for x in xs:\n            total += x\n\n"
    assert cut_at_dedent(raw, 0) == raw  # cursor at column 0: nothing is shallower
    plan = SpanPlan("block", "        ", "        ", "")
    done = finish_candidate(raw, plan, "", lambda c: 0, 0)
    assert done == "total = 0\n        for x in xs:\n            total += x"
    # an instruct model's answer is indented from its own first line: padded, not cut
    relative = finish_candidate("x = 1\ny = 2", plan, "", lambda c: 0, 0, file_indents=False)
    assert relative == "x = 1\n        y = 2"


def test_reindent_puts_model_lines_under_the_cursor_block():
    plan = SpanPlan("block", "        ", "        ", "")
    assert reindent("x = 1\ny = 2\n", plan) == "x = 1\n        y = 2"
    plan = SpanPlan("block", "    ", "", "")  # cursor at column 0 of an empty line
    assert reindent("x = 1\n    y = 2", plan) == "    x = 1\n    y = 2"


def test_trim_until_parses_cuts_lines_for_blocks_and_words_for_lines():
    bad_after_first = lambda c: 1 if "BAD" in c else 0  # noqa: E731
    assert trim_until_parses("ok = 1\nBAD\n", bad_after_first, 0, block=True) == "ok = 1"
    assert trim_until_parses("a b BAD", bad_after_first, 0, block=False) == "a b"
    assert trim_until_parses("BAD", bad_after_first, 0, block=False) is None


def test_rank_dedupes_drops_blank_and_orders_by_confidence():
    out = rank([Scored("a", 0.2), Scored("b", 0.9), Scored("a", 0.5), Scored("  ", 1.0)])
    assert [c.text for c in out] == ["b", "a"]


@pytest.mark.parametrize("text", [
    "nnnnnnnnnnnnnnnnnnnnnnnn", "key=key=key=key=key=key=key",
    "width * width * width * width * width * width", "w.w.w.w.w.w.w.w.w.w.w.w",
    "[1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]", "x = 1\nx = 1\nx = 1\nx = 1\nx = 1\n"])
def test_a_unit_written_again_and_again_is_repetitive(text):
    assert repetitive(text)


@pytest.mark.parametrize("text", [
    "self.y = y", "a[j], a[i] = a[i], a[j]", "# " + "=" * 70, "-" * 40, "[0, 0, 0]",
    "factorial(n - 1)", "x", "", "print(a, b, c, d)", "aaa", "1000000", "0.000001",
    "1_000_000", "11111"])
def test_ordinary_code_and_rulers_are_not_repetitive(text):
    assert not repetitive(text)


def test_a_repetitive_candidate_is_never_shown():
    plan = SpanPlan("line", "    return n * ", "", "")
    assert finish_candidate("n" * 24, plan, "", lambda t: 0, 0) is None
    assert finish_candidate("factorial(n - 1)", plan, "", lambda t: 0, 0) == "factorial(n - 1)"
