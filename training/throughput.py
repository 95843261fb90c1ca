"""Training throughput at the shipped shape, one change at a time (tokens/s of whole steps).

    python -m training.throughput [--steps 30] [--out training/results/throughput.json]

Each configuration runs ``training.train`` for a few steps on the prepared data (batch 8 x
576 per process, AdamW), and the steady-state tokens/s is read from its log (the median of
the 10-step windows after the first, which holds the compile). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "training.train", "--objective", objective,
               "--out", f"{tmp}/run", "--steps", str(steps), "--batch", "8",
               "--eval-every", "100000", "--save-every", "100000", "--data", str(data),
               "--corpus", str(corpus), "--warmup", "5", *flags]
        if objective == "diffusion":
            cmd.append("--logits-shift")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        rows = [json.loads(x) for x in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()]
    windows = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    return {"tokens_per_s": round(statistics.median(windows)), "windows": windows,
            "wall_s": round(time.perf_counter() - t0)}


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
