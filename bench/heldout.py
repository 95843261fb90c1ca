"""Rest of the line in packages the model never saw: exact match on held-out code.

    python -m bench.heldout [--model embedded] [--ar bench/models/ar-twin] [--limit 300] [--out F]
    python -m bench.heldout make --corpus runs/corpus     # rebuild data/heldout_lines.jsonl.gz

The cases come from the packages held out whole from the training corpus
(``training/corpus_sources.json``, split "heldout"): a line of code is cut at its
indentation or at a token boundary inside it, and the model writes the rest of the line in
single-line mode with the file around it (up to 4,000 characters before, 2,000 after).
Cases are drawn round-robin over the packages so that no one package dominates, and are
committed so the figure does not depend on a corpus build.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

CASES = Path(__file__).with_name("data") / "heldout_lines.jsonl.gz"
PREFIX_CHARS, SUFFIX_CHARS = 4000, 2000
_TOKEN = re.compile(r"\w+|[^\s\w]")


@dataclass
class LineCase:
    package: str
    path: str
    prefix: str
    middle: str  # the rest of the line, without its newline
    suffix: str  # from the newline on


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def cut_line(text: str, rng: random.Random) -> tuple[int, int] | None:
    """(cursor, end of line) for a random code line of `text`, or None if it drew a blank
    or comment line: the cursor sits at the indentation (1 in 4) or at a token boundary."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    i = rng.randrange(len(starts) - 1)
    a, b = starts[i], starts[i + 1] - 1
    line = text[a:b]
    body = line.strip()
    if len(_TOKEN.findall(body)) < 2 or body.startswith("#") or len(body) > 100:
        return None
    indent = len(line) - len(line.lstrip())
    if rng.random() < 0.25:
        return a + indent, b
    bounds = [a + m.start() for m in _TOKEN.finditer(line) if m.start() > indent]
    return (rng.choice(bounds), b) if bounds else None


def draw_cases(corpus: Path, cut: Callable[[str, random.Random], tuple[int, int] | None],
               case_type: type, n: int = 300, seed: int = 0,
               keep: Callable[[str], bool] = lambda text: True) -> list:
    """`n` cases of `case_type` (package, path, prefix, middle, suffix) from the corpus's
    held-out split, round-robin over its packages: `cut` draws a middle in a file's text."""
    by_package: dict[str, list[dict]] = {}
    with open(corpus / "heldout.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if _parses(row["text"]) and keep(row["text"]):
                by_package.setdefault(row["path"].split("/", 1)[0], []).append(row)
    rng = random.Random(seed)
    packages = sorted(by_package)
    cases: list = []
    while len(cases) < n:
        package = packages[len(cases) % len(packages)]
        row = rng.choice(by_package[package])
        text = row["text"]
        span = cut(text, rng)
        if span is None or not text[span[0]:span[1]].strip():
            continue
        a, b = span
        cases.append(case_type(package, row["path"], text[max(0, a - PREFIX_CHARS):a],
                               text[a:b], text[b:b + SUFFIX_CHARS]))
    return cases


def make_cases(corpus: Path, n: int = 300, seed: int = 0) -> list[LineCase]:
    """`n` cases from the corpus's held-out split, round-robin over its packages."""
    return draw_cases(corpus, cut_line, LineCase, n, seed)


def load_cases(limit: int = 0, path: Path = CASES, case_type: type = LineCase) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        cases = [case_type(**json.loads(line)) for line in f]
    return cases[:limit] if limit else cases


def save_cases(cases: list, path: Path = CASES) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(asdict(case)) + "\n")


def evaluate(infiller, cases: list[LineCase], **sampler: object) -> dict:  # noqa: ANN001
    """Exact match % of the rest of the line, similarity, passes per token, latency
    (`sampler` overrides the decoding settings)."""
    exact = passes = tokens = 0
    similarity = 0.0
    ms: list[float] = []
    for case in tqdm(cases, desc=f"{infiller.name}/heldout", leave=False):
        out = infiller(case.prefix + case.suffix, len(case.prefix), "line", **sampler)
        got = out.text.rstrip()
        exact += got == case.middle.rstrip()
        similarity += SequenceMatcher(None, got, case.middle.rstrip()).ratio()
        passes += out.forward_passes
        tokens += out.generated_tokens
        ms.append(out.ms)
    ms.sort()
    n = len(cases)
    return {"n": n, "exact": round(100 * exact / n, 1), "similarity": round(similarity / n, 3),
            "passes_per_token": round(passes / max(tokens, 1), 3),
            "p50_ms": round(ms[n // 2], 1)}


def cli(argv: list[str] | None, bench: ModuleType) -> None:
    """The command line of a held-out benchmark module (this one, ``bench.blocks``): `make`
    draws its cases from the corpus's held-out split and commits them; `run` scores the
    denoiser (and the AR twin with ``--ar``) on them, with ``--out`` a JSON of the figures."""
    ap = argparse.ArgumentParser(description=bench.__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", choices=["run", "make"], default="run")
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--ar", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the figures here (json)")
    args = ap.parse_args(argv)
    if args.command == "make":
        cases = bench.make_cases(args.corpus)
        bench.save_cases(cases)
        print(f"{len(cases)} cases from {len({c.package for c in cases})} packages -> "
              f"{bench.CASES}")
        return
    import torch

    from bench.infill import Infiller
    from bench.suite import machine
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    torch.set_num_threads(args.threads)
    cases = bench.load_cases(args.limit)
    models = {"diffusion": args.model} | ({"ar": str(args.ar)} if args.ar else {})
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(args.threads),
                    "models": {}}
    for name, model in models.items():
        infiller = Infiller(Engine(Settings(model=model, threads=args.threads)), name)
        result["models"][name] = bench.evaluate(infiller, cases)
        print(name, json.dumps(result["models"][name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    cli(argv, sys.modules[__name__])


if __name__ == "__main__":
    main()
