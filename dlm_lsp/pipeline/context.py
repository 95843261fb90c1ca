"""Fill-in-the-middle context: what of the buffer the model sees, under a token budget.

The prefix and the suffix each get a share of ``contextTokens`` (the suffix 30%, so it
survives a long prefix) and give what they do not use to the other. Windows
are cut at line boundaries, and moved to a top-level line (a syntax boundary) when one is
near the cut. With a workspace index, snippets of the project (``retrieval.py``) are chosen
first, within ``retrieval_share`` of the budget, and the file's windows get the rest;
without one, left-over budget is spent on the snippets of other open buffers of the same
language that look most like the code around the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Encode = Callable[[str], list[int]]
# (text before the cursor, text after it, encode, token budget) -> rendered snippets
Retrieve = Callable[[str, str, Encode, int], list[str]]

SUFFIX_SHARE = 0.3  # of the budget kept for the suffix when both sides are long
CHARS_PER_TOKEN = 8  # generous: we never tokenize more than budget * this characters
SNIPPET_LINES = 20
MIN_SNIPPET_BUDGET = 48  # tokens; below this, other buffers are not worth a look


@dataclass
class OtherDocument:
    """An open buffer that may lend snippets."""

    name: str
    text: str


@dataclass
class FimContext:
    """The model's view: token windows around the cursor (prefix ends where text is inserted)."""

    prefix: str
    suffix: str
    prefix_ids: list[int]
    suffix_ids: list[int]
    prefix_start: int  # document offset where the prefix window begins
    suffix_end: int  # document offset where the suffix window ends
    snippets: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)


def _lines_back(text: str) -> list[str]:
    """`text` split into lines, last line first, each keeping its line break."""
    return list(reversed(text.splitlines(keepends=True)))


def _take_lines(lines: Sequence[str], counts: Sequence[float], budget: int) -> int:
    """How many of `lines` (in order) fit in `budget` tokens; at least the first one."""
    used = 0.0
    for i, n in enumerate(counts):
        if used + n > budget and i > 0:
            return i
        used += n
    return len(lines)


def _top_level(line: str) -> bool:
    closing = line.lstrip().startswith((")", "]", "}"))
    return bool(line.strip()) and not line[0].isspace() and not closing


def _count(encode: Encode, pieces: Sequence[str]) -> list[float]:
    """Tokens per line, scaled so they add up to the tokens of the lines encoded together
    (byte-level BPE merges across line breaks, so per-line counts overestimate)."""
    counts = [len(encode(p)) for p in pieces]
    total = sum(counts)
    joint = len(encode("".join(pieces))) if total else 0
    return [c * joint / total for c in counts] if total else counts


def build_context(
    text: str,
    offset: int,
    encode: Encode,
    budget: int,
    *,
    end: int | None = None,
    others: Sequence[OtherDocument] = (),
    comment: str = "#",
    retrieve: Retrieve | None = None,
    retrieval_share: float = 0.0,
) -> FimContext:
    """Prefix window ending at `offset` and suffix window starting at `end` (default
    `offset`), after the snippets `retrieve` returns for up to `retrieval_share` of the
    budget."""
    end = offset if end is None else end
    raw_prefix = text[max(0, offset - budget * CHARS_PER_TOKEN):offset]
    raw_suffix = text[end:end + budget * CHARS_PER_TOKEN]
    retrieved: list[str] = []
    retrieved_ids: list[int] = []
    if retrieve is not None and retrieval_share > 0:
        retrieved = retrieve(raw_prefix, raw_suffix, encode, int(budget * retrieval_share))
        if retrieved:
            retrieved_ids = encode("".join(retrieved))
            budget = max(16, budget - len(retrieved_ids))
    pre_lines = _lines_back(raw_prefix)  # nearest first
    suf_lines = raw_suffix.splitlines(keepends=True)
    pre_counts = _count(encode, pre_lines)
    suf_counts = _count(encode, suf_lines)

    # Shares: the suffix gets SUFFIX_SHARE, each side lends what it does not need.
    suf_share = int(budget * SUFFIX_SHARE)
    pre_need, suf_need = sum(pre_counts), sum(suf_counts)
    suf_budget = int(min(suf_need, max(suf_share, budget - pre_need)))
    pre_budget = budget - suf_budget

    n_pre = _take_lines(pre_lines, pre_counts, pre_budget)
    cut_off = n_pre < len(pre_lines) or offset - len(raw_prefix) > 0
    if cut_off:  # move the start to a top-level line in the oldest eighth of the window
        for i in range(n_pre - 1, max(n_pre - 1 - n_pre // 8, 0), -1):
            if _top_level(pre_lines[i]):
                n_pre = i + 1
                break
    n_suf = _take_lines(suf_lines, suf_counts, suf_budget)
    if n_suf < len(suf_lines):  # end before a top-level line in the last eighth
        for i in range(n_suf - 1, max(n_suf - 1 - n_suf // 8, 0), -1):
            if _top_level(suf_lines[i]):
                n_suf = i
                break

    prefix = "".join(reversed(pre_lines[:n_pre]))
    suffix = "".join(suf_lines[:n_suf])
    prefix_ids = encode(prefix)[-pre_budget:] if pre_budget > 0 else []
    suffix_ids = encode(suffix)[:suf_budget] if suf_budget > 0 else []

    prefix_start = offset - len(prefix)
    snippets: list[str] = list(retrieved)
    spare = budget - len(prefix_ids) - len(suffix_ids)
    if spare >= MIN_SNIPPET_BUDGET and others and not retrieved:
        snippets = pick_snippets(prefix, others, encode, spare, comment)
    if snippets:
        head = "".join(snippets)
        prefix = head + prefix
        prefix_ids = (retrieved_ids or encode(head)) + prefix_ids
    return FimContext(
        prefix=prefix,
        suffix=suffix,
        prefix_ids=prefix_ids,
        suffix_ids=suffix_ids,
        prefix_start=prefix_start,
        suffix_end=end + len(suffix),
        snippets=snippets,
    )


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")


def _words(text: str) -> set[str]:
    return set(_IDENT.findall(text))


def pick_snippets(
    near_cursor: str,
    others: Sequence[OtherDocument],
    encode: Encode,
    budget: int,
    comment: str,
) -> list[str]:
    """The windows of other buffers most like the code before the cursor (Jaccard on words)."""
    query = _words("".join(near_cursor.splitlines(keepends=True)[-SNIPPET_LINES:]))
    if not query:
        return []
    scored: list[tuple[float, str, str]] = []
    for doc in others:
        lines = doc.text[:200_000].splitlines(keepends=True)
        best, best_text = 0.0, ""
        for i in range(0, max(len(lines) - SNIPPET_LINES, 0) + 1, SNIPPET_LINES // 2):
            window = "".join(lines[i:i + SNIPPET_LINES])
            words = _words(window)
            score = len(query & words) / len(query | words) if words else 0.0
            if score > best:
                best, best_text = score, window
        if best > 0:
            scored.append((best, doc.name, best_text))
    scored.sort(reverse=True)
    out: list[str] = []
    for _, name, window in scored:
        snippet = f"{comment} Path: {name}\n{window.rstrip()}\n\n"
        cost = len(encode(snippet))
        if cost > budget:
            continue
        out.append(snippet)
        budget -= cost
    return out
