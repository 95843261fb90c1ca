from dlm_lsp.pipeline.syntax import (
    HOLE_MARKER,
    detect_language,
    error_count,
    error_regions,
    find_holes,
    indent_unit,
    plan_span,
)


def test_language_from_language_id_then_extension():
    assert detect_language("python", "file:///a.txt") == "python"
    assert detect_language(None, "file:///src/main.rs") == "rust"
    assert detect_language("plaintext", "file:///notes.txt") is None
    assert detect_language("", "file:///a%20b/x.tsx") == "typescriptreact"


def test_single_line_mode_mid_line():
    text = "x = foo(a, )\n"
    plan = plan_span(text, text.index(")"), "python")
    assert plan.mode == "line" and plan.line_suffix == ")" and plan.line_prefix == "x = foo(a, "
    assert not plan.blank_line


def test_block_mode_on_an_empty_line_after_a_block_opener():
    text = "class A:\n    def f(self, x):\n        \n"
    plan = plan_span(text, text.index("        \n") + 8, "python")
    assert plan.mode == "block" and plan.indent == "        " and plan.blank_line


def test_a_line_is_blank_only_when_nothing_but_whitespace_is_on_it_either_side():
    text = "x = 1\n\n    return x\n"
    assert plan_span(text, len("x = 1\n"), "python").blank_line  # empty line, line mode
    assert not plan_span(text, len("x = 1\n\n"), "python").blank_line  # code after cursor
    assert not plan_span(text, len("x = 1"), "python").blank_line  # end of a written line


def test_colon_of_a_dict_or_in_a_comment_does_not_open_a_block():
    text = "d = {'a':\n\n"
    assert plan_span(text, len(text) - 1, "python").mode == "line"
    text = "x = 1  # note:\n\n"
    assert plan_span(text, len(text) - 1, "python").mode == "line"


def test_brace_opens_a_block_in_c_like_languages():
    text = "function f(x) {\n  \n}\nfunction g() {\n  return 1;\n}\n"
    plan = plan_span(text, text.index("  \n") + 2, "javascript")
    assert plan.mode == "block" and plan.indent == "  "


def test_indent_unit_detects_tabs_and_two_spaces():
    assert indent_unit("if x:\n\ty\n") == "\t"
    assert indent_unit("a {\n  b\n    c\n}\n") == "  "


def test_holes_ellipsis_bodies_todo_lines_and_marker():
    text = (
        "def a():\n    ...\n\n"
        "def b():\n    # TODO: write b\n\n"
        f"x = {HOLE_MARKER}\n"
        "y = [...]\n"
    )
    holes = find_holes(text, "python")
    assert [h.kind for h in holes] == ["ellipsis", "todo", "marker"]
    assert text[holes[0].start:holes[0].end] == "..."
    assert text[holes[1].start:holes[1].end] == "# TODO: write b" and holes[1].indent == "    "
    assert text[holes[2].start:holes[2].end] == HOLE_MARKER


def test_holes_are_limited_to_the_range():
    text = "def a():\n    ...\n\ndef b():\n    ...\n"
    second = text.rindex("...")
    holes = find_holes(text, "python", second - 4, len(text))
    assert len(holes) == 1 and holes[0].start == second


def test_error_regions_cover_whole_broken_lines():
    text = "def f(x):\n    return x\n\ny = (1 +\nz = 2\n"
    regions = error_regions(text, "python")
    assert regions and all(text[s:e].strip() for s, e in regions)
    assert any("y = (1 +" in text[s:e] for s, e in regions)
    assert error_regions("x = 1\n", "python") == []


def test_error_count_is_zero_for_unknown_languages():
    assert error_count(None, "((((") == 0
    assert error_count("python", "def (:") > 0


def test_errors_touching_the_insertion_count_twice_so_a_broken_token_loses():
    line = "def f(xs):\n    total = 0\n    for v in xs:\n        total += "
    rest = "\n    return total\n"
    at = len(line)

    def count(candidate: str) -> int:
        return error_count("python", line + candidate + rest, (at, at + len(candidate)))

    baseline = count("")
    assert baseline == 1  # the unfinished `total +=`, not at the cursor
    assert count('"') > baseline  # an unterminated string where the cursor was
    assert count("path.(path)") > baseline
    assert count("v") == 0
    # an error elsewhere in the file is not the candidate's fault
    assert error_count("python", "x = (\n" + line + "v" + rest, (6 + at, 7 + at)) == 1
