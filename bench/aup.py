"""Accuracy under parallelism: quality against tokens per forward pass, over decoding settings.

    python -m bench.aup [--models embedded] [--twin bench/models/ar-twin]
                        [--heldout 150] [--single 200] [--multi 100] [--settings NAME ...]
                        [--out bench/results/aup.json]

Each denoiser decodes four fixed sets (the obvious lines; the first ``--heldout`` held-out
rest-of-line cases; ``--single`` evenly spaced HumanEval single-line tasks and ``--multi``
multi-line tasks) under every setting of :data:`SETTINGS` (or those named by
``--settings``): one token a step (the baseline), the confidence threshold, the step
budget, the unmask window, drafts looked up in the context and copying from them, a lower
threshold for a span's end, and a learned finality filter when the checkpoint ships one.
The AR twin decodes once, at one token per pass. Per set and model, the points (tokens
per pass, quality) give an AUP score as d3LLM defines it (Qian et al., 2025, "AUP: when
accuracy meets parallelism in diffusion language models"):

    AUP = rho_1 * y_1 + 1/2 * sum_{i>=2} (rho_i - rho_{i-1}) * (y_i W(y_i) + y_{i-1} W(y_{i-1}))

over the points sorted by tokens per pass rho, keeping only those with y >= y_1 - 5 (y_1: the
quality at the lowest parallelism), with W(y) = min(exp(-alpha (1 - y / y_max)), 1), alpha =
3 and y_max the best quality any model reached on the set. Plot: quality against tokens per
pass, one curve per model and set.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from dlm_lsp.model.sampler import ONE_TOKEN_A_STEP

ROOT = Path(__file__).resolve().parent.parent
# name -> sampler overrides (on top of the server's line/block defaults)
SETTINGS: dict[str, dict[str, object]] = {
    "one token a step": ONE_TOKEN_A_STEP,
    "threshold 0.9 (default)": {},
    "threshold 0.7": {"threshold": 0.7},
    "threshold 0.5": {"threshold": 0.5},
    "threshold 0.3": {"threshold": 0.3},
    "window 2": {"window": 2},
    "window 16": {"window": 16},
    "at most 8 steps": {"max_steps": 8},
    "at most 4 steps": {"max_steps": 4},
    "no copying": {"copy_threshold": 1.0},
    "no lookup drafts, no copying": {"lookup": 0, "copy_threshold": 1.0},
    "end 0.5": {"end_threshold": 0.5},
}
SETS = ("obvious", "heldout", "single", "multi")


def weight(y: float, y_max: float, alpha: float = 3.0) -> float:
    """W(y) of AUP: 1 at the best quality, decaying exponentially below it."""
    if y_max <= 0:
        return 1.0
    return min(math.exp(-alpha * (1 - y / y_max)), 1.0)


def aup(points: list[tuple[float, float]], y_max: float, alpha: float = 3.0,
        y_min_offset: float = 5.0) -> float:
    """AUP of (tokens per pass, quality %) points (see the module docstring)."""
    if not points:
        return 0.0
    pts = sorted(points)
    y_min = pts[0][1] - y_min_offset
    pts = [p for p in pts if p[1] >= y_min]
    total = pts[0][0] * pts[0][1]  # rho_1 * y_1
    for (r0, y0), (r, y) in zip(pts, pts[1:], strict=False):
        total += 0.5 * (r - r0) * (y * weight(y, y_max, alpha) + y0 * weight(y0, y_max, alpha))
    return total


def evaluate_sets(infiller, limits: dict[str, int], **sampler: object) -> dict:  # noqa: ANN001
    """{set: {"quality", "tokens_per_pass"}} for one model and one setting."""
    from bench import heldout, obvious
    from bench.humaneval import evaluate as humaneval
    from bench.humaneval import load_tasks

    out = {}
    runs = {"obvious": lambda: obvious.evaluate(infiller, obvious.load_cases(), **sampler),
            "heldout": lambda: heldout.evaluate(infiller, heldout.load_cases(limits["heldout"]),
                                                **sampler),
            "single": lambda: humaneval(infiller, load_tasks("single", limits["single"]),
                                        **sampler),
            "multi": lambda: humaneval(infiller, load_tasks("multi", limits["multi"]),
                                       **sampler)}
    for name, run in runs.items():
        r = run()
        quality = r["exact"] if "exact" in r else r["pass@1"]
        ppt = r["passes_per_token"]
        out[name] = {"quality": quality, "tokens_per_pass": round(1 / ppt, 3) if ppt else 0.0}
    return out


def sweep(models: dict[str, str], twin: str | None, limits: dict[str, int], threads: int,
          settings: dict[str, dict[str, object]]) -> dict:
    import torch

    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    torch.set_num_threads(threads)
    result: dict = {"models": {}}
    for name, path in models.items():
        infiller = Infiller(Engine(Settings(model=path, threads=threads)), name)
        model = infiller.engine.load()
        runs = dict(settings)
        if getattr(model, "finality", None) is not None:  # a shipped finality filter
            runs |= {f"filter {t:g}": {"filter_threshold": t} for t in (0.9, 0.7, 0.5)}
        result["models"][name] = {}
        for label, sampler in runs.items():
            figures = evaluate_sets(infiller, limits, **sampler)
            result["models"][name][label] = figures
            print(name, label, json.dumps(figures), flush=True)
    if twin:
        infiller = Infiller(Engine(Settings(model=twin, threads=threads)), "twin")
        result["models"]["AR twin"] = {"left to right": evaluate_sets(infiller, limits)}
        print("AR twin", json.dumps(result["models"]["AR twin"]), flush=True)
    return result


def score(result: dict) -> dict:
    """AUP per model and set, and its mean over the sets."""
    y_max = {s: max(run[s]["quality"] for runs in result["models"].values()
                    for run in runs.values()) for s in SETS}
    out = {}
    for name, runs in result["models"].items():
        per_set = {}
        for s in SETS:
            pts = [(run[s]["tokens_per_pass"], run[s]["quality"]) for run in runs.values()
                   if run[s]["tokens_per_pass"] > 0]
            per_set[s] = round(aup(pts, y_max[s]), 2)
        out[name] = {**per_set, "mean": round(sum(per_set.values()) / len(SETS), 2)}
    return {"y_max": y_max, "aup": out}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"obvious": "obvious lines, exact %", "heldout": "held-out rest of line, exact %",
              "single": "HumanEval single-line pass@1 %", "multi": "HumanEval multi-line pass@1 %"}
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, s in zip(axes, SETS, strict=True):
        for name, runs in result["models"].items():
            pts = sorted((run[s]["tokens_per_pass"], run[s]["quality"]) for run in runs.values())
            style = "s" if len(pts) == 1 else "o-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
        ax.set_title(titles[s], fontsize=10)
        ax.set_xlabel("tokens per forward pass")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    from bench.suite import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["embedded"],
                    help="NAME=DIR or DIR (denoisers, each swept over the settings)")
    ap.add_argument("--twin", default=str(ROOT / "bench" / "models" / "ar-twin"))
    ap.add_argument("--heldout", type=int, default=150)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--multi", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                    metavar="NAME", help="only these settings (and the filter's)")
    ap.add_argument("--with", dest="with_", type=Path, nargs="*", default=[],
                    help="earlier results (same limits) whose models join this one's")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "aup.json")
    args = ap.parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in args.models)
    limits = {"heldout": args.heldout, "single": args.single, "multi": args.multi}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(args.threads),
              "limits": limits, **sweep(models, args.twin or None, limits, args.threads,
                                        {k: SETTINGS[k] for k in args.settings})}
    for earlier in args.with_:
        before = json.loads(earlier.read_text())
        if before["limits"] != limits:
            raise SystemExit(f"{earlier} was measured on other subsets: {before['limits']}")
        result["models"] = before["models"] | result["models"]
    result |= score(result)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["aup"], indent=1))


if __name__ == "__main__":
    main()
