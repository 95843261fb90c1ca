"""Where a single-line completion's time goes, and why the denoiser commits few tokens a pass.

    python -m bench.profile [--limit 100]

Runs HumanEval single-line tasks through the same Infiller as the benchmark with the
denoiser wrapped by a timer that also reads its outputs: time in full forwards (which fill
the K/V cache), in cached steps and elsewhere (tokenising, sampling, post-processing), and,
for every step, how many still-open slots the model is at least 0.9 / 0.5 / 0.3 sure of.
Parallel decoding can only commit the slots above the threshold. It also reads, at the
first pass, how often each slot of the window proposes an end token: the sampler commits an
end only at a span's first open slot, so a model that proposes ends everywhere past the
next few slots can only grow its span from the left.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from bench.humaneval import Task, editor_view, load_tasks
from bench.infill import Infiller
from dlm_lsp.model.denoiser import KVCache

LEVELS = (0.9, 0.5, 0.3)


class TimedDenoiser(nn.Module):
    """Forwards to the denoiser, recording each call's kind, time and top-1 probabilities."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def forward(self, ids: torch.Tensor, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, **kw: Any) -> torch.Tensor:
        full = cache is None or not cache.filled
        t0 = time.perf_counter()
        logits = self.inner(ids, positions=positions, cache=cache, **kw)
        ms = (time.perf_counter() - t0) * 1e3
        top, arg = torch.softmax(logits[0].float(), dim=-1).max(-1)  # row 0, per slot
        self.calls.append({"full": full, "ms": ms, "top": top.tolist(), "arg": arg.tolist()})
        return logits


def profile(infiller: Infiller, tasks: list[Task]) -> dict[str, Any]:
    """Mean time split and per-step confidence counts over `tasks` (single-line)."""
    model = infiller.engine.load()
    inner = model.denoiser
    timed = TimedDenoiser(inner)
    model.denoiser = timed  # type: ignore[assignment]
    total_ms, full_ms, step_ms, steps, over = [], [], [], [], {lv: [] for lv in LEVELS}
    ends = {model.spec.eos_token_id, model.spec.pad_token_id}
    first_ends: list[list[bool]] = []  # first pass, slots of the window in order
    try:
        for task in tqdm(tasks, desc="profile", leave=False):
            timed.calls.clear()
            text, offset, mode = editor_view(task)
            out = infiller(text, offset, mode)
            total_ms.append(out.ms)
            full_ms.append(sum(c["ms"] for c in timed.calls if c["full"]))
            cached = [c["ms"] for c in timed.calls if not c["full"]]
            step_ms.extend(cached)
            steps.append(len(timed.calls))
            if timed.calls:
                first_ends.append([a in ends for a in timed.calls[0]["arg"]])
            for c in timed.calls:
                for lv in LEVELS:
                    over[lv].append(sum(p >= lv for p in c["top"]))
    finally:
        model.denoiser = inner
    mean_total = statistics.mean(total_ms)
    mean_full = statistics.mean(full_ms)
    mean_cached = statistics.mean(step_ms) if step_ms else 0.0
    mean_steps = statistics.mean(steps)
    return {
        "requests": len(tasks),
        "mean_ms": round(mean_total, 1),
        "full_forward_ms": round(mean_full, 1),
        "cached_step_ms": round(mean_cached, 2),
        "forward_passes_mean": round(mean_steps, 2),
        "cached_steps_share": round(mean_cached * (mean_steps - 1) / mean_total, 3),
        "full_forward_share": round(mean_full / mean_total, 3),
        "other_ms": round(mean_total - mean_full - mean_cached * (mean_steps - 1), 1),
        # per forward pass: open slots whose best token has at least this probability
        "open_slots_at_least": {str(lv): round(statistics.mean(v), 2) for lv, v in over.items()},
        "passes_with_2plus_over_0.9": round(sum(n >= 2 for n in over[0.9]) / len(over[0.9]), 3),
        # first pass: share of requests whose slot k (0 = the cursor) proposes an end token
        "first_pass_end_share_by_slot": [
            round(statistics.mean(row[k] for row in first_ends if len(row) > k), 3)
            for k in range(max(map(len, first_ends), default=0))],
    }


def main(argv: list[str] | None = None) -> None:
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = Engine(Settings(model=args.model, threads=args.threads))
    print(json.dumps(profile(Infiller(engine), load_tasks("single", args.limit)), indent=1))


if __name__ == "__main__":
    main()
