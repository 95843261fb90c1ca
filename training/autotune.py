"""The fastest training configuration for this machine, measured, not assumed.

    python -m training.autotune --size small --objective ar     # measure (or read) and print

Machines differ: where the CPU has bf16 units (AMX, AVX-512 bf16) bf16 autocast and
``torch.compile`` pay several times over; where it has none, bf16 is emulated and compiling
costs minutes for nothing. So each candidate (:data:`CANDIDATES`) runs a few steps of
``training.train`` at the shape, objective and batch asked for, and the fastest by measured
tokens/s is kept. Results are cached in ``runs/autotune.json`` per CPU model, core count,
torch version and training shape, so a campaign measures once per machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CACHE = Path("runs/autotune.json")

# name -> training.train flags; a bf16 candidate only where the CPU has bf16 kernels
CANDIDATES: dict[str, list[str]] = {
    "fp32 eager 1x2": ["--dtype", "fp32", "--attention", "sdpa", "--no-compile",
                       "--procs", "1", "--threads", "2"],
    "fp32 compiled 2x1": ["--dtype", "fp32", "--attention", "sdpa", "--compile",
                          "--procs", "2", "--threads", "1"],
    "bf16 eager 1x2": ["--dtype", "bf16", "--attention", "sdpa", "--no-compile",
                       "--procs", "1", "--threads", "2"],
    "bf16 compiled 1x2": ["--dtype", "bf16", "--attention", "math", "--compile",
                          "--procs", "1", "--threads", "2"],
    "bf16 compiled 2x1": ["--dtype", "bf16", "--attention", "math", "--compile",
                          "--procs", "2", "--threads", "1"],
}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_key(size: str, objective: str, seq_len: int, batch: int) -> str:
    return (f"{cpu_name()} | {os.cpu_count()} cores | torch {torch.__version__} | "
            f"{size} {objective} {batch}x{seq_len}")


def candidates(cores: int | None = None) -> dict[str, list[str]]:
    """The configurations worth trying here: bf16 only with bf16 kernels, one process per
    core only with two cores or more."""
    cores = cores or os.cpu_count() or 1
    out = {}
    for name, flags in CANDIDATES.items():
        if name.startswith("bf16") and not has_bf16():
            continue
        if "2x1" in name and cores < 2:
            continue
        out[name] = flags
    return out


def measure(flags: list[str], size: str, objective: str, seq_len: int, batch: int,
            data: Path, corpus: Path, steps: int) -> dict:
    """Steady-state tokens/s of `steps` steps of ``training.train`` with `flags` (the median
    of its 10-step windows after the first, which holds any compile)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "training.train", "--objective", objective,
               "--size", size, "--seq-len", str(seq_len), "--out", f"{tmp}/run",
               "--steps", str(steps), "--batch", str(batch), "--eval-every", "100000",
               "--save-every", "100000", "--val-batches", "1", "--data", str(data),
               "--corpus", str(corpus), "--warmup", "5", *flags]
        if objective == "diffusion":
            cmd.append("--logits-shift")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        rows = [json.loads(x) for x in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()]
    windows = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    return {"tokens_per_s": round(statistics.median(windows)) if windows else 0,
            "windows": windows, "wall_s": round(time.perf_counter() - t0)}


def best_config(size: str, objective: str, seq_len: int = 576, batch: int = 8,
                data: Path = Path("runs/data"), corpus: Path = Path("runs/corpus"),
                steps: int = 30, cache: Path = CACHE, remeasure: bool = False) -> dict:
    """{"name", "flags", "tokens_per_s", "measured": {name: tokens/s}} for this machine,
    from the cache or measured now (a few minutes)."""
    key = machine_key(size, objective, seq_len, batch)
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in known and not remeasure:
        return known[key]
    measured = {}
    for name, flags in candidates().items():
        r = measure(flags, size, objective, seq_len, batch, data, corpus, steps)
        measured[name] = r["tokens_per_s"]
        print(f"{r['tokens_per_s']:>7} tok/s  {name}  ({r['wall_s']} s)", file=sys.stderr,
              flush=True)
    name = max(measured, key=measured.get)
    result = {"name": name, "flags": CANDIDATES[name], "tokens_per_s": measured[name],
              "measured": measured, "date": time.strftime("%Y-%m-%d")}
    known[key] = result
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    from training.shapes import SIZES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--objective", choices=["ar", "diffusion"], default="ar")
    ap.add_argument("--seq-len", type=int, default=576)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--data", type=Path, default=Path("runs/data"))
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--remeasure", action="store_true")
    args = ap.parse_args(argv)
    print(json.dumps(best_config(args.size, args.objective, args.seq_len, args.batch,
                                 args.data, args.corpus, args.steps,
                                 remeasure=args.remeasure), indent=1))


if __name__ == "__main__":
    main()
