"""Held-out infilling: exact match and parse rate on files of the corpus's held-out split.

    python -m training.eval --model runs/dlm-eos/checkpoint [--ar runs/ar/checkpoint] \\
        [--n 150] [--slots 24 96 96]

Middles are drawn from held-out files the way training draws them (rest of a line, whole
lines, syntax nodes, random spans), shown as an editor would show them, and infilled through
``bench.infill`` without the true length. Exact match compares the infill with the true
middle (trailing blanks ignored); parse rate is the share of completed files that still
parse. Used to choose the variable-length mechanism and to compare with the AR twin.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dlm_lsp.model.middles import node_spans, pick_middle
from training.corpus import read_split

MODE_OF = {"line_rest": "line", "lines": "block", "node": "span", "random_span": "span"}


@dataclass
class Case:
    text: str  # the editor's buffer
    offset: int
    mode: str
    truth: str


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def heldout_cases(corpus: Path, n: int, seed: int = 0) -> list[Case]:
    """`n` middles from held-out files that parse, cycling through the middle kinds."""
    rng = random.Random(seed)
    files = [r["text"] for r in read_split(corpus, "heldout") if _parses(r["text"])]
    spans = [node_spans(t) for t in files]
    cases: list[Case] = []
    while len(cases) < n:
        f = rng.randrange(len(files))
        text = files[f]
        a, b = pick_middle(text, spans[f], rng)
        middle = text[a:b]
        if not middle.strip() or len(middle) > 300:
            continue
        block = middle.endswith("\n") and (a == 0 or text[a - 1] == "\n")
        if block and middle.count("\n") > 1:
            view = text[:a] + "\n" + text[b:]
            cases.append(Case(view, a, "block", middle[:-1]))
        elif block:
            cases.append(Case(text[:a] + "\n" + text[b:], a, "line", middle[:-1]))
        else:
            mode = "line" if "\n" not in middle and text[b:b + 1] in ("\n", "") else "span"
            cases.append(Case(text[:a] + text[b:], a, mode, middle))
    return cases


def score(infiller, cases: list[Case], **sampler: object) -> dict:  # noqa: ANN001
    """Exact match, parse rate, forward passes per token, how far the infill's length is
    from the true middle's (did the model end it in the right place) and the mean time per
    infill, per mode and overall."""
    rows: dict[str, list[tuple[bool, bool, int, int, float, float]]] = {}
    for case in tqdm(cases, desc=infiller.name, leave=False):
        out = infiller(case.text, case.offset, case.mode, **sampler)
        exact = out.text.rstrip() == case.truth.rstrip()
        filled = case.text[:case.offset] + out.text + case.text[case.offset:]
        length_error = abs(len(out.text.rstrip()) - len(case.truth.rstrip()))
        rows.setdefault(case.mode, []).append((exact, _parses(filled), out.forward_passes,
                                               out.generated_tokens, length_error, out.ms))
    result = {}
    everything = [r for mode_rows in rows.values() for r in mode_rows]
    for mode, rs in [*rows.items(), ("all", everything)]:
        result[mode] = {
            "n": len(rs),
            "exact_match": round(100 * sum(r[0] for r in rs) / len(rs), 1),
            "parse_rate": round(100 * sum(r[1] for r in rs) / len(rs), 1),
            "passes_per_token": round(sum(r[2] for r in rs) / max(1, sum(r[3] for r in rs)), 3),
            "median_length_error_chars": sorted(r[4] for r in rs)[len(rs) // 2],
            "mean_ms": round(sum(r[5] for r in rs) / len(rs), 1),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    import torch

    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ar", type=Path, default=None)
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--slots", type=int, nargs=3, default=None, metavar=("LINE", "BLOCK", "SPAN"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = heldout_cases(args.corpus, args.n)
    settings = Settings(model=args.model, threads=args.threads)
    slots = dict(zip(("line", "block", "span"), args.slots, strict=True)) if args.slots else None
    results = {"diffusion": score(Infiller(Engine(settings), "diffusion", slots), cases)}
    if args.ar:
        ar = Settings(model=str(args.ar), threads=args.threads)
        results["ar"] = score(Infiller(Engine(ar), "ar", slots), cases)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
