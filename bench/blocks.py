"""Block bodies in packages the model never saw: what the editor gets after `def ...:` + Enter.

    python -m bench.blocks [--model embedded] [--ar bench/models/ar-twin] [--limit 200] [--out F]
    python -m bench.blocks make --corpus runs/corpus     # rebuild data/heldout_blocks.jsonl.gz

Each case takes a block opener (``def``, ``if``, ``for``, ``with``, ``try``, ...) of a file
of the held-out packages (``training/corpus_sources.json``, split "heldout") whose body is
at most :data:`MAX_BODY_LINES` lines, removes the body and leaves one empty line indented as
the body was, the cursor at its end: the user has just pressed Enter after the opener. The
model writes the body in block mode with the file around it (up to 4,000 characters
before, 2,000 after). Scores: the answer's first line exactly the body's first line, the
whole body exactly, the similarity of the whole body, answers given, tokens and forward
passes per answer. Cases are drawn round-robin over the packages and committed, so the
figure does not depend on a corpus build.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from tqdm import tqdm

from bench import heldout
from bench.heldout import cli, draw_cases
from bench.lsp_latency import OPENER, _indent
from dlm_lsp.pipeline.postprocess import first_line

CASES = Path(__file__).with_name("data") / "heldout_blocks.jsonl.gz"
MAX_BODY_LINES = 8


@dataclass
class BlockCase:
    package: str
    path: str
    prefix: str  # up to the body's indentation on its first line
    middle: str  # the body from its first character to the end of its last line
    suffix: str  # from the line break after the body on


def cut_block(text: str, rng: random.Random) -> tuple[int, int] | None:
    """(cursor, end of body) for a random block opener of `text` whose body has at most
    :data:`MAX_BODY_LINES` lines, or None if the line drawn is no such opener."""
    lines = text.split("\n")
    i = rng.randrange(len(lines) - 1)
    opener = lines[i]
    if not opener.isascii() or not OPENER.match(opener):
        return None
    first = lines[i + 1]
    if not first.strip() or _indent(first) <= _indent(opener):
        return None
    end = i + 1  # one past the body's last line (blank lines inside it belong to it)
    last = i + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > _indent(opener)):
        if lines[end].strip():
            last = end
        end += 1
    if last - i > MAX_BODY_LINES:
        return None
    start = sum(len(ln) + 1 for ln in lines[:i + 1]) + _indent(first)
    stop = sum(len(ln) + 1 for ln in lines[:last]) + len(lines[last])
    return start, stop


def make_cases(corpus: Path, n: int = 300, seed: int = 0) -> list[BlockCase]:
    """`n` cases from the corpus's held-out files of more than 20 lines, round-robin over
    its packages."""
    return draw_cases(corpus, cut_block, BlockCase, n, seed,
                      keep=lambda text: text.count("\n") > 20)


def load_cases(limit: int = 0, path: Path = CASES) -> list[BlockCase]:
    return heldout.load_cases(limit, path, BlockCase)


def save_cases(cases: list[BlockCase], path: Path = CASES) -> None:
    heldout.save_cases(cases, path)


def _first_line(text: str) -> str:
    return first_line(text.strip()).strip()


def score(answers: list[str], cases: list[BlockCase]) -> dict:
    """First-line exact %, whole-body exact %, mean similarity and answered % of `answers`
    (the text each case got) against the cases' bodies."""
    n = len(cases)
    first = sum(bool(_first_line(a)) and _first_line(a) == _first_line(c.middle)
                for a, c in zip(answers, cases, strict=True))
    whole = sum(a.rstrip() == c.middle.rstrip() for a, c in zip(answers, cases, strict=True))
    similarity = sum(SequenceMatcher(None, a.rstrip(), c.middle.rstrip()).ratio()
                     for a, c in zip(answers, cases, strict=True))
    return {"n": n, "first_line_exact": round(100 * first / n, 1),
            "body_exact": round(100 * whole / n, 1), "similarity": round(similarity / n, 3),
            "answered": round(100 * sum(bool(a.strip()) for a in answers) / n, 1)}


def evaluate(infiller, cases: list[BlockCase], **sampler: object) -> dict:  # noqa: ANN001
    """:func:`score` of the block-mode answers, with tokens per answer, tokens per forward
    pass and latency (`sampler` overrides the decoding settings)."""
    answers: list[str] = []
    passes = tokens = 0
    ms: list[float] = []
    for case in tqdm(cases, desc=f"{infiller.name}/blocks", leave=False):
        out = infiller(case.prefix + case.suffix, len(case.prefix), "block", **sampler)
        answers.append(out.text)
        passes += out.forward_passes
        tokens += out.generated_tokens
        ms.append(out.ms)
    ms.sort()
    n = len(cases)
    return {**score(answers, cases), "tokens": round(tokens / n, 1),
            "tokens_per_pass": round(tokens / max(passes, 1), 3),
            "p50_ms": round(ms[n // 2], 1), "p95_ms": round(ms[min(n - 1, int(n * 0.95))], 1)}


def main(argv: list[str] | None = None) -> None:
    cli(argv, sys.modules[__name__])


if __name__ == "__main__":
    main()
