"""From raw infilled text to something worth showing: cut, de-duplicate, re-indent, check.

All functions are pure; the parse check is passed in as a callable so these can be tested
without tree-sitter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dlm_lsp.pipeline.syntax import SpanPlan

ParseCheck = Callable[[str], int]  # candidate -> number of syntax errors with it inserted


@dataclass
class Scored:
    text: str
    confidence: float


def first_line(text: str) -> str:
    """Single-line mode keeps what comes before the first line break."""
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


def suffix_overlap_variants(text: str, line_suffix: str) -> list[str]:
    """`text`, and `text` without an ending that repeats the start of the line's suffix."""
    out = [text]
    tail = line_suffix.strip()
    if not tail:
        return out
    body = text.rstrip()
    for k in range(min(len(tail), len(body)), 0, -1):
        if body.endswith(tail[:k]):
            out.insert(0, body[: len(body) - k].rstrip())
            break
    return out


def cut_repeated_suffix(text: str, suffix: str) -> str:
    """Block mode: stop where the candidate starts rewriting the code that follows."""
    following = [ln.strip() for ln in suffix.splitlines() if ln.strip()][:2]
    if not following:
        return text
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == following[0] and (
            len(following) < 2 or i + 1 >= len(lines) or lines[i + 1].strip() == following[1]
        ):
            return "".join(lines[:i])
    return text


def cut_at_dedent(text: str, column: int) -> str:
    """Block mode, for a model that writes each line's indentation as it stands in the
    file: stop at the first line after the cursor's that is indented less than the cursor's
    `column` (that line is the code after the block, not its body)."""
    if column <= 0:
        return text
    lines = text.splitlines(keepends=True)
    for i in range(1, len(lines)):
        if lines[i].strip() and len(_indent_of(lines[i])) < column:
            return "".join(lines[:i])
    return text


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def reindent(text: str, plan: SpanPlan) -> str:
    """Fit a block completion under the cursor's block: first line after the cursor's
    whitespace, later lines never shallower than the block's indentation."""
    lines = text.splitlines(keepends=True)
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ""
    if not plan.indent:  # no block to fit under (benchmarks): keep the model's indentation
        return "".join(lines).rstrip()
    first = lines[0].lstrip(" \t")
    have = plan.line_prefix  # whitespace already on the cursor's line
    if len(have) < len(plan.indent) and plan.indent.startswith(have):
        first = plan.indent[len(have):] + first
    rest = lines[1:]
    body = [ln for ln in rest if ln.strip()]
    if body:
        shallowest = min(len(_indent_of(ln)) for ln in body)
        if shallowest < len(plan.indent):
            pad = plan.indent[: len(plan.indent) - shallowest]
            rest = [pad + ln if ln.strip() else ln for ln in rest]
    return (first + "".join(rest)).rstrip()


def trim_until_parses(text: str, errors: ParseCheck, baseline: int, block: bool) -> str | None:
    """The longest cut of `text` (whole lines for blocks, words for a line) that adds no
    syntax error over `baseline`; None if even the shortest does."""
    for cut in _cuts(text, block):
        if cut.strip() and errors(cut) <= baseline:
            return cut
    return None


def _cuts(text: str, block: bool, limit: int = 8) -> Iterable[str]:
    yield text
    if block:
        lines = text.splitlines(keepends=True)
        for n in range(len(lines) - 1, max(len(lines) - 1 - limit, 0), -1):
            yield "".join(lines[:n]).rstrip()
    else:
        ends = [m.start() for m in re.finditer(r"[\s,;)\]}]", text)]
        for e in reversed(ends[-limit:]):
            yield text[:e].rstrip()


def rank(candidates: Iterable[Scored]) -> list[Scored]:
    """Distinct non-blank candidates, most confident first."""
    seen: set[str] = set()
    out = []
    for c in sorted(candidates, key=lambda c: -c.confidence):
        if c.text.strip() and c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out


def repetitive(text: str, min_repeats: int = 4, share: float = 0.6) -> bool:
    """Whether `text` ends in one short unit written again and again (``nnnn``,
    ``key=key=key=key=``, `` * width * width * width``) over most of its length: what a
    model writes when it cannot find where a span ends. Units without a letter or digit
    (``=====``, ``----``) are the rulers and separators code does have, and units of digits
    are numbers (``1000000``, ``0.0001``). Closing brackets and quotes at the end do not
    hide a run (``[1, 2, 3, 3, 3, 3, 3]``)."""
    s = text.rstrip().rstrip(")]}'\";:, ")
    n = len(s)
    for p in range(1, min(16, n // min_repeats) + 1):
        unit = s[n - p:]
        if not any(ch.isalnum() for ch in unit) or all(c.isdigit() or c in "._" for c in unit):
            continue
        k = 1
        while (k + 1) * p <= n and s[n - (k + 1) * p:n - k * p] == unit:
            k += 1
        if k >= min_repeats and k * p >= share * n:
            return True
    return False


def finish_candidate(
    raw: str, plan: SpanPlan, suffix: str, errors: ParseCheck, baseline: int,
    file_indents: bool = True,
) -> str | None:
    """Apply the mode's cuts, the suffix de-duplication, re-indentation and the parse check;
    None when nothing is left worth showing (a repetitive candidate is never shown).
    `file_indents`: the model writes indentation as it stands in the file (infilling), so a
    block ends where a line is indented less than the cursor; an instruct model's answer
    (False) is indented relative to its own first line."""
    text = _finish(raw, plan, suffix, errors, baseline, file_indents)
    return None if text is None or repetitive(text) else text


def _finish(raw: str, plan: SpanPlan, suffix: str, errors: ParseCheck,
            baseline: int, file_indents: bool) -> str | None:
    if plan.mode == "line":
        text = first_line(raw).rstrip()
        if not plan.line_prefix.strip():  # nothing typed yet on the line: no leading blanks
            text = text.lstrip() if plan.line_prefix else text
        if text.strip() == plan.line_suffix.strip():
            return None
        best: tuple[int, str] | None = None
        for variant in suffix_overlap_variants(text, plan.line_suffix):
            kept = trim_until_parses(variant, errors, baseline, block=False)
            if kept is not None:
                n = errors(kept)
                if best is None or n < best[0]:
                    best = (n, kept)
        return best[1] if best else None
    text = cut_repeated_suffix(raw, suffix)
    if file_indents and not plan.line_prefix.strip():
        text = cut_at_dedent(text, len(plan.line_prefix))
    text = reindent(text, plan)
    if not text.strip():
        return None
    return trim_until_parses(text, errors, baseline, block=True)
