"""The speed/quality benchmark: the embedded denoiser against its AR twin, in one run.

    python -m bench [--limit 200] [--thresholds 1.0 0.9 0.7 0.5 0.3 0.1] [--requests 40]
    dlm-lsp bench ...                       (the same, from a source checkout)

Same machine, same process, same threads, one model at a time:

1. **quality**: HumanEval-infilling pass@1 without the true length (single-line,
   multi-line, random-span), with forward passes per generated token, generated tokens
   per second and per-task latency, for both models through the server's Engine;
2. **curve** and **steps**: single-line pass@1 against latency for the denoiser at several
   confidence thresholds with a step for every slot (1.0 = one token per step, the
   yardstick for parallel decoding) and at several step budgets (24 slots in 8 steps = at
   least 3 tokens per pass; the default for a line);
3. **variants**: the decoding choices (K/V cache, refresh policy, window, line-break stop,
   int8, threads), each against the default on single-line;
4. **lsp**: p50/p95 of single-line and block completions through the LSP server from a
   client process (warm server, 512 context tokens), for both models;
5. **profile**: where a single-line request's time goes and how many open slots the
   denoiser is sure of at each pass (``bench.profile``);
6. **suffix reuse**: how often a fresh decode after an edit `d` lines below the cursor
   gives the same completion (``bench.suffix_reuse``);
7. **cpu tricks**: fused matmuls, int8 and fewer output rows at the model's shapes
   (``bench.cpu_tricks``);
8. **gpu**: ``bench.gpu`` when CUDA is available, else a note.

Writes ``results.json``, ``RESULTS.md`` and ``speed_quality.png`` into --out; ``--only
SECTION ...`` reruns some sections and merges them into the existing results.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sysconfig
from pathlib import Path
from typing import Any

import torch

from bench import cpu_tricks, report
from bench.humaneval import FILES, evaluate, load_tasks
from bench.infill import Infiller
from bench.lsp_latency import measure
from bench.profile import profile
from bench.suffix_reuse import agreement
from dlm_lsp.config import Settings
from dlm_lsp.model.checkpoint import EMBEDDED_DIR
from dlm_lsp.model.denoiser import count_parameters
from dlm_lsp.pipeline.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
AR_TWIN = ROOT / "bench" / "models" / "ar-twin"

# key -> (label, settings overrides, sampler overrides), each measured against the defaults
# (int8 on CPU, unmask window 8, threshold 0.9, 8 steps for a line, K/V cache refreshed
# once per span)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "fp32": ("fp32 linear layers (no int8 quantisation)", {"quantize": "none"}, {}),
    "no-window": ("no unmask window (logits for every open slot)", {"unmask_window": 0}, {}),
    "window-4": ("unmask window 4", {"unmask_window": 4}, {}),
    "no-cache": ("no K/V cache (a full forward every step)", {"kv_cache": False}, {}),
    "refresh-0.5": ("cache refreshed when half the slots changed", {}, {"refresh_ratio": 0.5}),
    "no-line-stop": ("no line-break stop (decode all 24 slots)", {}, {"stop_ids": ()}),
    "threads-1": ("1 thread", {"threads": 1}, {}),
}


def machine(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version()}


def describe(engine: Engine) -> dict[str, Any]:
    model = engine.load()
    total, non_emb = count_parameters(model.denoiser)
    return {"path": str(model.path.relative_to(ROOT) if model.path.is_relative_to(ROOT)
                         else model.path),
            "parameters": total, "non_embedding": non_emb,
            "objective": model.spec.training.get("objective", "diffusion")}


def point(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A quality result with tokens per forward pass added."""
    tpp = 1 / result["passes_per_token"] if result["passes_per_token"] else 0.0
    return {**extra, **result, "tokens_per_pass": round(tpp, 2)}


SECTIONS = ("quality", "curve", "steps", "variants", "lsp", "profile", "suffix_reuse", "cpu_tricks",
            "gpu")


class Run:
    """What the sections share: settings, both engines, the task lists."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.base = Settings(model=args.model, threads=args.threads)
        self.engines = {"diffusion": Engine(self.base),
                        "ar": Engine(dataclasses.replace(self.base, model=str(args.ar)))}
        self.tasks = {kind: load_tasks(kind, args.limit, args.data) for kind in args.kinds}
        self.single = self.tasks.get("single") or load_tasks("single", args.limit, args.data)
        self.dlm = Infiller(self.engines["diffusion"], "diffusion")

    def variant_engine(self, key: str) -> tuple[str, Engine, dict[str, Any]]:
        label, settings_over, sampler = VARIANTS[key]
        return label, Engine(dataclasses.replace(self.base, **settings_over)), sampler

    def quality(self, out: dict[str, Any]) -> dict[str, Any]:
        engines = dict(self.engines)
        for key in self.args.quality_variants:  # the denoiser under another setting
            engines[f"diffusion, {key}"] = self.variant_engine(key)[1]
        return {name: {kind: point(evaluate(Infiller(engine, name), ts))
                       for kind, ts in self.tasks.items()} for name, engine in engines.items()}

    def curve(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        # a step for every slot, so that threshold 1.0 is one token per step
        return [point(evaluate(self.dlm, self.single, threshold=th,
                               max_steps=self.base.max_tokens), threshold=th)
                for th in self.args.thresholds]

    def steps(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        return [point(evaluate(self.dlm, self.single, max_steps=n), steps=n)
                for n in self.args.steps]

    def variants(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for key in self.args.variants:
            label, engine, sampler = self.variant_engine(key)
            torch.set_num_threads(engine.settings.threads)
            rows.append(point(evaluate(Infiller(engine, "diffusion"), self.single, **sampler),
                              variant=label))
            torch.set_num_threads(self.args.threads)
        return rows

    def lsp(self, out: dict[str, Any]) -> dict[str, Any]:
        return {name: asyncio.run(measure(engine.load().path, ["line", "block"],
                                          self.args.requests, context=self.args.context,
                                          threads=self.args.threads))
                for name, engine in self.engines.items()}

    def profile(self, out: dict[str, Any]) -> dict[str, Any]:
        return profile(self.dlm, self.single)

    def suffix_reuse(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
        return agreement(self.engines["diffusion"], text, self.args.reuse_sites)

    def cpu_tricks(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        return cpu_tricks.measure()

    def gpu(self, out: dict[str, Any]) -> dict[str, Any]:
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA device on this machine: the GPU figures need a lent "
                               "GPU (python -m bench.gpu there)"}
        from bench.gpu import run as gpu_run

        return gpu_run("cuda", embedded=EMBEDDED_DIR)


def run_suite(args: argparse.Namespace, previous: dict[str, Any] | None = None,
              save: Any = None) -> dict[str, Any]:
    """Run the sections of `args.only` (all by default) over `previous` results; `save` is
    called with the results after each section (a long run keeps what it measured)."""
    torch.set_num_threads(args.threads)
    run = Run(args)
    out = dict(previous or {})
    out.update({"machine": machine(args.threads), "limit": args.limit,
                "settings": {"threshold": run.base.confidence_threshold,
                             "max_tokens": run.base.max_tokens,
                             "max_block_tokens": run.base.max_block_tokens,
                             "context_tokens": run.base.context_tokens,
                             "unmask_window": run.base.unmask_window,
                             "line_steps": run.base.line_steps,
                             "quantize": run.base.quantize},
                "models": {n: describe(e) for n, e in run.engines.items()}})
    for section in args.only or SECTIONS:
        out[section] = getattr(run, section)(out)
        if save is not None:
            save(out)
    out["targets"] = report.targets(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded", help="the denoiser (default: embedded)")
    ap.add_argument("--ar", type=Path, default=AR_TWIN, help="its AR twin")
    ap.add_argument("--limit", type=int, default=200,
                    help="tasks per HumanEval benchmark, evenly spaced (0 = all)")
    ap.add_argument("--kinds", nargs="+", default=list(FILES), choices=list(FILES))
    ap.add_argument("--data", type=Path, default=None, help="HumanEval-infilling directory")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 0.9, 0.7, 0.5, 0.3, 0.1])
    ap.add_argument("--steps", type=int, nargs="+", default=[24, 12, 8, 6, 4, 3],
                    help="step budgets for single-line (24 slots: 24 = one token per step)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--quality-variants", nargs="*", default=["fp32"],
                    choices=[k for k, v in VARIANTS.items() if v[1]],
                    help="settings variants also scored on every benchmark")
    ap.add_argument("--requests", type=int, default=40, help="LSP requests per mode and model")
    ap.add_argument("--reuse-sites", type=int, default=40, help="cursors for suffix reuse")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=None,
                    help="run these sections and merge them into --out's results.json "
                         "(also how to finish an interrupted run)")
    args = ap.parse_args(argv)
    if args.data is None:
        from bench.humaneval import DATA
        args.data = DATA
    previous = None
    if args.only and (args.out / "results.json").is_file():
        previous = json.loads((args.out / "results.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)

    def save(partial: dict[str, Any]) -> None:
        (args.out / "results.json").write_text(json.dumps(partial, indent=1))

    result = run_suite(args, previous, save)
    save(result)
    (args.out / "RESULTS.md").write_text(report.markdown(result))
    report.plot(result, args.out / "speed_quality.png")
    print(report.markdown(result))


if __name__ == "__main__":
    main()
