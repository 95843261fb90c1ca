"""HumanEval-infilling pass@1 without the true middle length (Bavarian et al. 2022 data).

    python -m bench.humaneval --diffusion DIR --ar DIR [--limit 200] [--kinds single multi random]

The data is read from ``../shared/data/humaneval-infilling`` (never trained on). Each
problem is shown as an editor would show it (see ``editor_view``), infilled greedily by each
model through ``bench.infill``, and scored by running the problem's tests in a subprocess
with a timeout. ``--limit`` takes an evenly spaced subset (the same for both models).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from tqdm import tqdm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "humaneval-infilling"
FILES = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random": "HumanEval-RandomSpanInfilling.jsonl.gz",
}
MODE = {"single": "line", "multi": "block", "random": "span"}


@dataclass
class Task:
    task_id: str
    kind: str
    prompt: str
    suffix: str
    middle: str  # the canonical middle: used for scoring reports only, never by a model
    test: str
    entry_point: str


def load_tasks(kind: str, limit: int = 0, data: Path = DATA) -> list[Task]:
    """The problems of one benchmark; with `limit`, an evenly spaced subset of that size."""
    path = data / FILES[kind]
    if not path.is_file():
        raise SystemExit(f"{path} not found (the benchmarks read ../shared/data)")
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    if limit and limit < len(rows):
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    return [Task(r["task_id"], kind, r["prompt"], r["suffix"], r["canonical_solution"],
                 r["test"], r["entry_point"]) for r in rows]


def editor_view(task: Task) -> tuple[str, int, str]:
    """(buffer, cursor offset, mode). Whole-line middles become an empty line at the cursor,
    as in an editor; a random span is cut out where it was."""
    mode = MODE[task.kind]
    if mode == "span":
        return task.prompt + task.suffix, len(task.prompt), mode
    return task.prompt + "\n" + task.suffix, len(task.prompt), mode


def program(task: Task, middle: str) -> str:
    """The file that is tested: the view with the middle inserted."""
    text, offset, _ = editor_view(task)
    return text[:offset] + middle + text[offset:]


_VERDICTS: dict[tuple[str, str, str], bool] = {}  # (task, benchmark, middle) -> passed


def passes(task: Task, middle: str, timeout: float = 3.0) -> bool:
    """Run the problem's tests against the completed program in a fresh interpreter (once
    per distinct middle: decoding variants often write the same one). The time limit is the
    reference harness's 3 s; the slowest canonical program runs in 0.22 s here, and a wrong
    line inside a loop often never ends."""
    key = (task.task_id, task.kind, middle)
    if key not in _VERDICTS:
        _VERDICTS[key] = _run_tests(task, middle, timeout)
    return _VERDICTS[key]


def _run_tests(task: Task, middle: str, timeout: float) -> bool:
    source = program(task, middle) + "\n\n" + task.test + f"\n\ncheck({task.entry_point})\n"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        proc = subprocess.run([sys.executable, f.name], capture_output=True, timeout=timeout,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(f.name)


def evaluate(infiller, tasks: list[Task], **sampler: object) -> dict:  # noqa: ANN001
    """pass@1, forward passes per generated token, tokens/s and latency for one model; also
    how often it answers at all (a candidate that survives the server's cuts) and the mean
    character similarity to the canonical middle, which still move when pass@1 sits at a
    handful of tasks (a weak model)."""
    solved = passes_total = tokens = answered = 0
    similarity = 0.0
    ms: list[float] = []
    for task in tqdm(tasks, desc=f"{infiller.name}/{tasks[0].kind}", leave=False):
        text, offset, mode = editor_view(task)
        out = infiller(text, offset, mode, **sampler)
        solved += passes(task, out.text)
        answered += bool(out.text.strip())
        similarity += SequenceMatcher(None, out.text.strip(), task.middle.strip()).ratio()
        passes_total += out.forward_passes
        tokens += out.generated_tokens
        ms.append(out.ms)
    ms.sort()
    return {
        "n": len(tasks),
        "pass@1": round(100 * solved / len(tasks), 2),
        "answered": round(100 * answered / len(tasks), 1),
        "similarity": round(similarity / len(tasks), 3),
        "passes_per_token": round(passes_total / max(tokens, 1), 3),
        "tokens_per_s": round(tokens / (sum(ms) / 1e3), 1),
        "p50_ms": round(ms[len(ms) // 2], 1),
        "p95_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 1),
    }


def main(argv: list[str] | None = None) -> None:
    import torch

    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diffusion", default="embedded")
    ap.add_argument("--ar", type=Path, default=None)
    ap.add_argument("--kinds", nargs="+", default=list(FILES), choices=list(FILES))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-diffusion", action="store_true", help="only the AR twin")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the results as JSON here (merged into the file if it exists)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(model=args.diffusion, threads=args.threads)
    infillers = [] if args.no_diffusion else [Infiller(Engine(settings), "diffusion")]
    if args.ar:
        ar = Settings(model=str(args.ar), threads=args.threads)
        infillers.append(Infiller(Engine(ar), "ar"))
    results: dict = {"models": {}}
    if args.out and args.out.is_file():
        results = json.loads(args.out.read_text())
    results.update({"threads": args.threads, "cpu_count": os.cpu_count()})
    for infiller in infillers:
        for kind in args.kinds:
            r = evaluate(infiller, load_tasks(kind, args.limit))
            results["models"].setdefault(infiller.name, {})[kind] = r
            print(infiller.name, kind, json.dumps(r), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
