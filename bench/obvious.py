"""Obvious completions: hand-written lines that any Python programmer finishes the same way.

    python -m bench.obvious [--model embedded] [--ar bench/models/ar-twin]

``data/obvious.txt`` holds the cases (the expected rest of the line between U+27E6 and U+27E7, the
cursor at the first). Each is completed in single-line mode through ``bench.infill`` and
scored by exact match of the line (trailing blanks ignored), with the character similarity
beside it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from tqdm import tqdm

CASES = Path(__file__).with_name("data") / "obvious.txt"
OPEN, CLOSE = "\u27e6", "\u27e7"


@dataclass
class ObviousCase:
    name: str
    prefix: str
    middle: str
    suffix: str


def parse_cases(text: str) -> list[ObviousCase]:
    """Cases in the ``### name`` format of ``data/obvious.txt`` (comments before the first)."""
    cases = []
    for block in ("\n" + text).split("\n### ")[1:]:
        name, _, body = block.partition("\n")
        body = body.rstrip("\n") + "\n"
        if body.count(OPEN) != 1 or body.count(CLOSE) != 1:
            raise ValueError(f"case {name!r} needs exactly one {OPEN}...{CLOSE}")
        prefix, rest = body.split(OPEN)
        middle, suffix = rest.split(CLOSE)
        if "\n" in middle:
            raise ValueError(f"case {name!r}: the expected completion must be one line")
        cases.append(ObviousCase(name.strip(), prefix, middle, suffix))
    return cases


def load_cases(path: Path = CASES) -> list[ObviousCase]:
    return parse_cases(path.read_text(encoding="utf-8"))


def evaluate(infiller, cases: list[ObviousCase], **sampler: object) -> dict:  # noqa: ANN001
    """Exact match %, similarity, forward passes per token and latency for one model, and the
    per-case answers (so a report can show what the model wrote); `sampler` overrides the
    decoding settings."""
    exact = passes = tokens = 0
    similarity = 0.0
    ms: list[float] = []
    answers = {}
    for case in tqdm(cases, desc=f"{infiller.name}/obvious", leave=False):
        out = infiller(case.prefix + case.suffix, len(case.prefix), "line", **sampler)
        got = out.text.rstrip()
        exact += got == case.middle.rstrip()
        similarity += SequenceMatcher(None, got, case.middle).ratio()
        passes += out.forward_passes
        tokens += out.generated_tokens
        ms.append(out.ms)
        answers[case.name] = got
    ms.sort()
    n = len(cases)
    return {
        "n": n,
        "exact": round(100 * exact / n, 1),
        "similarity": round(similarity / n, 3),
        "passes_per_token": round(passes / max(tokens, 1), 3),
        "p50_ms": round(ms[n // 2], 1),
        "answers": answers,
    }


def main(argv: list[str] | None = None) -> None:
    import torch

    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--ar", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", action="store_true", help="print each case's answer")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = load_cases()
    models = {"diffusion": args.model} | ({"ar": str(args.ar)} if args.ar else {})
    for name, model in models.items():
        r = evaluate(Infiller(Engine(Settings(model=model, threads=args.threads)), name), cases)
        if args.show:
            for case in cases:
                mark = "ok " if r["answers"][case.name] == case.middle.rstrip() else "   "
                print(f"{mark}{case.name:34} {r['answers'][case.name]!r}  ({case.middle!r})")
        print(name, json.dumps({k: v for k, v in r.items() if k != "answers"}))


if __name__ == "__main__":
    main()
