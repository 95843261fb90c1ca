"""Which model shape the latency budget holds: single-line LSP latency and training speed per
shape, measured on this machine.

    python -m bench.shapes [--shapes small d384x8 d512x8 d512x10] [--contexts 512 1024]
                           [--out bench/results/shapes.json]

Latency depends on a shape and on how many forward passes a line takes, not on what the
weights say; so each shape is a random-weight checkpoint (``random-checkpoint --parrot``:
every slot is one known token, vocabulary 8,192 as the shipped model) served by the real
LSP server (int8 linear layers, the dual K/V cache, the unmask window: the editor's fast
path), and the number of passes per line is fixed with ``lineSteps`` at a one-token-a-step
threshold. The pass counts are those of real lines: the expected rest of the line in the
obvious-lines and held-out sets is 4 tokens at the median and 19 at the 95th percentile,
plus one step for the end; at 1 token per pass that is 5 and 20 passes, at 2.5 tokens per
pass 2 and 8. A line's p50 is the median over 40 cursors at the median pass
count, its p95 the 95th percentile at the p95 count (``bench.lsp_latency``).

Training tokens/s per shape is measured with ``training.autotune``'s fastest configuration
for the shipped shape on this machine (AR objective; ``--no-train`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "shapes"
MIDDLE_P50, MIDDLE_P95 = 4, 19  # tokens of the rest of a line (bench/data sets, measured)


def passes(tokens: int, per_pass: float) -> int:
    """Forward passes for a line of `tokens` plus its end at `per_pass` tokens a pass."""
    return max(1, math.ceil((tokens + 1) / per_pass))


def checkpoint(size: str) -> Path:
    from dlm_lsp.model.random_checkpoint import make_random_checkpoint, stdlib_texts
    from training.shapes import SIZES

    d, layers, heads, kv = SIZES[size]
    path = RUNS / f"random-{size}"
    if not (path / "model.safetensors").is_file():
        make_random_checkpoint(path, hidden_size=d, num_layers=layers, num_heads=heads,
                               num_kv_heads=kv, vocab_size=8192, texts=stdlib_texts(),
                               parrot="x")
    return path


def latency(model: Path, context: int, steps: int, requests: int) -> dict:
    from bench.lsp_latency import measure

    settings = {"confidenceThreshold": 1.0, "lineSteps": steps, "maxTokens": 24}
    out = asyncio.run(measure(model, ["line"], requests=requests, context=context,
                              settings=settings))
    return out["line"]


def params(size: str) -> int:
    from dlm_lsp.model.denoiser import Denoiser, count_parameters
    from training.shapes import model_config

    return count_parameters(Denoiser(model_config(size, 8192)))[0]


def train_speed(size: str, flags: list[str]) -> int:
    from training.autotune import measure

    return measure(flags, size, "ar", 576, 8, Path("runs/data"), Path("runs/corpus"),
                   steps=30)["tokens_per_s"]


def sweep(shapes: list[str], contexts: list[int], requests: int, train: bool) -> dict:
    from training.autotune import best_config

    flags = best_config("small", "ar")["flags"] if train else []
    rows = []
    for size in shapes:
        model = checkpoint(size)
        row: dict = {"shape": size, "params_m": round(params(size) / 1e6, 1)}
        for context in contexts:
            for per_pass in (1.0, 2.5):
                p50_steps = passes(MIDDLE_P50, per_pass)
                p95_steps = passes(MIDDLE_P95, per_pass)
                mid = latency(model, context, p50_steps, requests)
                high = latency(model, context, p95_steps, requests)
                key = f"ctx{context}_{per_pass:g}tpp"
                row[key] = {"p50_ms": mid["p50_ms"], "p95_ms": high["p95_ms"],
                            "passes": [p50_steps, p95_steps]}
                print(size, key, row[key], file=sys.stderr, flush=True)
        if train:
            row["train_ar_tokens_per_s"] = train_speed(size, flags)
            print(size, "train", row["train_ar_tokens_per_s"], file=sys.stderr, flush=True)
        rows.append(row)
    return {"rows": rows, "train_config": " ".join(flags)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = [r["params_m"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in [k for k in rows[0] if k.startswith("ctx")]:
        for stat, style in (("p50_ms", "o-"), ("p95_ms", "s--")):
            axes[0].plot(x, [r[key][stat] for r in rows], style, label=f"{key} {stat[:3]}")
    axes[0].axhline(150, color="k", lw=0.8)
    axes[0].axhline(300, color="k", lw=0.8, ls="--")
    axes[0].set_xlabel("parameters (M)")
    axes[0].set_ylabel("single-line completion through the LSP (ms)")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if all("train_ar_tokens_per_s" in r for r in rows):
        axes[1].plot(x, [r["train_ar_tokens_per_s"] for r in rows], "o-")
        for r in rows:
            axes[1].annotate(r["shape"], (r["params_m"], r["train_ar_tokens_per_s"]),
                             fontsize=8)
    axes[1].set_xlabel("parameters (M)")
    axes[1].set_ylabel("AR training tokens/s")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    from bench.suite import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["small", "d384x8", "d512x8", "d512x10"])
    ap.add_argument("--contexts", nargs="+", type=int, default=[512, 1024])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shapes.json")
    args = ap.parse_args(argv)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(os.cpu_count() or 1),
              **sweep(args.shapes, args.contexts, args.requests, not args.no_train)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    for r in result["rows"]:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
