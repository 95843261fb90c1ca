"""Training throughput at the shipped shape, one change at a time (tokens/s of whole steps).

    python -m training.throughput [--steps 30] [--out training/results/throughput.json]

Each configuration runs ``training.train`` for a few steps on the prepared data (batch 8 x
576 per process, AdamW), and the steady-state tokens/s is read from its log (the median of
the 10-step windows after the first, which holds the compile). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.autotune import measure as autotune_measure

# label -> (objective, flags)
CONFIGS: list[tuple[str, str, list[str]]] = [
    ("fp32, SDPA attention, eager, 1 process x 2 threads", "ar",
     ["--dtype", "fp32", "--attention", "sdpa", "--no-compile", "--procs", "1", "--threads", "2"]),
    ("+ bf16 autocast (AMX)", "ar",
     ["--dtype", "bf16", "--attention", "sdpa", "--no-compile", "--procs", "1", "--threads", "2"]),
    ("+ attention as matmul + softmax", "ar",
     ["--dtype", "bf16", "--attention", "math", "--no-compile", "--procs", "1", "--threads", "2"]),
    ("+ torch.compile (model and loss)", "ar",
     ["--dtype", "bf16", "--attention", "math", "--compile", "--procs", "1", "--threads", "2"]),
    ("+ 2 processes x 1 thread (gloo all-reduce)", "ar",
     ["--dtype", "bf16", "--attention", "math", "--compile", "--procs", "2", "--threads", "1"]),
    ("(instead: SDPA attention, compiled, 2 x 1)", "ar",
     ["--dtype", "bf16", "--attention", "sdpa", "--compile", "--procs", "2", "--threads", "1"]),
    ("diffusion: fp32, SDPA, eager, 1 x 2 threads", "diffusion",
     ["--dtype", "fp32", "--attention", "sdpa", "--no-compile", "--procs", "1", "--threads", "2"]),
    ("diffusion: bf16, matmul attention, compiled, 2 x 1", "diffusion",
     ["--dtype", "bf16", "--attention", "math", "--compile", "--procs", "2", "--threads", "1"]),
    ("diffusion: (instead: SDPA attention, compiled, 2 x 1)", "diffusion",
     ["--dtype", "bf16", "--attention", "sdpa", "--compile", "--procs", "2", "--threads", "1"]),
]


def measure(objective: str, flags: list[str], steps: int, data: Path, corpus: Path) -> dict:
    """Tokens/s of `flags` at the shipped shape (``training.autotune.measure``)."""
    return autotune_measure(flags, "small", objective, 576, 8, data, corpus, steps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--data", type=Path, default=Path("runs/data"))
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--out", type=Path, default=Path("training/results/throughput.json"))
    args = ap.parse_args(argv)
    results = {"date": time.strftime("%Y-%m-%d"), "steps": args.steps, "runs": []}
    for label, objective, flags in CONFIGS:
        r = {"config": label, "objective": objective, "flags": " ".join(flags),
             **measure(objective, flags, args.steps, args.data, args.corpus)}
        results["runs"].append(r)
        print(f"{r['tokens_per_s']:>7} tok/s  {label}", flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
