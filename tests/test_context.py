from dlm_lsp.pipeline.context import OtherDocument, build_context


def encode(text: str) -> list[int]:
    """One token per 4 characters (rounded up): simple and predictable."""
    return list(range((len(text) + 3) // 4))


def numbered(n: int, indent: str = "") -> str:
    return "".join(f"{indent}line_{i:04d} = {i}\n" for i in range(n))


def test_both_windows_fit_the_budget_and_cut_at_line_boundaries():
    text = numbered(400)
    offset = text.index("line_0200")
    ctx = build_context(text, offset, encode, 128)
    assert ctx.tokens <= 128
    assert ctx.prefix.startswith("line_") and ctx.prefix.endswith("\n")
    assert ctx.suffix.startswith("line_0200") and ctx.suffix.endswith("\n")
    assert text[ctx.prefix_start:offset] == ctx.prefix
    assert text[offset:ctx.suffix_end] == ctx.suffix


def test_suffix_is_kept_when_the_prefix_is_long():
    text = numbered(2000) + "tail_marker = 1\n"
    offset = text.index("tail_marker")
    ctx = build_context(text, offset, encode, 200)
    assert "tail_marker" in ctx.suffix
    assert len(ctx.suffix_ids) > 0 and ctx.tokens <= 200


def test_short_suffix_lends_its_share_to_the_prefix():
    text = numbered(400)
    ctx = build_context(text, len(text), encode, 128)
    assert ctx.suffix == "" and len(ctx.prefix_ids) > 100


def test_prefix_cut_moves_to_a_top_level_line():
    body = "".join(f"    step_{i} = {i}\n" for i in range(3))
    text = ("def f():\n" + body) * 30
    offset = len(text) - 10
    ctx = build_context(text, offset, encode, 150)
    assert ctx.prefix.startswith("def f():")


def test_other_buffers_lend_snippets_when_budget_remains():
    other = OtherDocument("helpers.py", "def parse_config(path):\n    return load_yaml(path)\n")
    unrelated = OtherDocument("x.py", "zzz = 1\n")
    text = "cfg = parse_config(path)\nvalue = "
    ctx = build_context(text, len(text), encode, 256, others=[unrelated, other])
    assert len(ctx.snippets) == 1 and "Path: helpers.py" in ctx.snippets[0]
    assert ctx.prefix.startswith("# Path: helpers.py") and ctx.tokens <= 256


def test_no_snippets_when_the_buffer_fills_the_budget():
    other = OtherDocument("helpers.py", "parse_config = 1\n")
    text = numbered(400) + "parse_config"
    ctx = build_context(text, len(text), encode, 128, others=[other])
    assert ctx.snippets == []


def test_replaced_range_is_excluded_from_both_windows():
    text = "a = 1\nb = 2\nc = 3\n"
    ctx = build_context(text, text.index("b"), encode, 64, end=text.index("c"))
    assert ctx.prefix == "a = 1\n" and ctx.suffix == "c = 3\n"


def test_project_snippets_take_at_most_their_share_and_the_file_gets_the_rest():
    text = numbered(400)
    offset = text.index("line_0200")
    asked: list[int] = []

    def retrieve(prefix: str, suffix: str, enc, budget: int) -> list[str]:  # noqa: ANN001
        asked.append(budget)
        assert prefix.endswith("line_0199 = 199\n") and suffix.startswith("line_0200")
        snippet = "# Path: util.py\ndef helper(value):\n    return value\n\n"
        return [snippet] if len(enc(snippet)) <= budget else []

    ctx = build_context(text, offset, encode, 256, retrieve=retrieve, retrieval_share=0.25)
    assert asked == [64]  # a quarter of the budget
    assert ctx.snippets and ctx.prefix.startswith("# Path: util.py\n")
    file_tokens = len(ctx.prefix_ids) - len(encode(ctx.snippets[0])) + len(ctx.suffix_ids)
    assert len(ctx.prefix_ids) + len(ctx.suffix_ids) <= 256 and file_tokens > 0.75 * 200
    plain = build_context(text, offset, encode, 256, retrieve=retrieve, retrieval_share=0.0)
    assert not plain.snippets and plain.tokens > ctx.tokens - len(encode(ctx.snippets[0])) - 1
    assert asked == [64]  # a share of 0 asks nothing
