"""Small-matrix tricks on CPU, timed at the embedded model's shapes.

    python -m bench.cpu_tricks [--threads 2]

A cached denoising step pushes a handful of rows (the open slots) through every linear
layer, where call overhead and weight reads weigh more than arithmetic; a full forward
pushes the whole context. Each trick is timed at both sizes against the plain layout:

- fused Q/K/V: one matmul instead of three;
- fused gate/up: one matmul for the two SwiGLU inputs;
- int8 dynamic quantisation of a linear layer (the ``quantize`` setting);
- fewer output-layer rows: logits for 8 open slots instead of 24 (the unmask window).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlm_lsp.model.checkpoint import EMBEDDED_DIR, quantize_int8
from dlm_lsp.model.denoiser import DenoiserConfig


def _us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return sorted(times)[len(times) // 2]


def embedded_config() -> DenoiserConfig:
    return DenoiserConfig.from_hf(json.loads((EMBEDDED_DIR / "config.json").read_text()))


@torch.inference_mode()
def measure(cfg: DenoiserConfig | None = None, rows: tuple[int, ...] = (24, 520),
            reps: int = 200) -> list[dict[str, Any]]:
    """Median microseconds of the plain layout and of each trick, per row count, at the
    layer shapes of `cfg` (default: the embedded model)."""
    cfg = cfg or embedded_config()
    hidden, inter, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q_out, kv_out = cfg.num_attention_heads * cfg.dim_head, cfg.num_key_value_heads * cfg.dim_head
    torch.manual_seed(0)
    q, k, v = nn.Linear(hidden, q_out), nn.Linear(hidden, kv_out), nn.Linear(hidden, kv_out)
    qkv = nn.Linear(hidden, q_out + 2 * kv_out)
    gate, up = nn.Linear(hidden, inter, bias=False), nn.Linear(hidden, inter, bias=False)
    gate_up = nn.Linear(hidden, 2 * inter, bias=False)
    down = nn.Linear(inter, hidden, bias=False)
    down8 = quantize_int8(nn.Sequential(down))
    head = nn.Linear(hidden, vocab, bias=False)
    out = []
    for n in rows:
        x = torch.randn(1, n, hidden)
        h = torch.randn(1, n, inter)
        r = max(10, reps * 24 // n)
        cases = [
            ("fused Q/K/V", lambda: (q(x), k(x), v(x)),  # noqa: B023
             lambda: qkv(x).split([q_out, kv_out, kv_out], -1)),  # noqa: B023
            ("fused gate/up", lambda: (gate(x), up(x)),  # noqa: B023
             lambda: gate_up(x).chunk(2, -1)),  # noqa: B023
            ("int8 down projection", lambda: down(h), lambda: down8(h)),  # noqa: B023
        ]
        if n <= 24:
            cases.append(("output layer for 8 rows, not 24", lambda: head(x),  # noqa: B023
                          lambda: head(x[:, :8])))  # noqa: B023
        for name, plain, trick in cases:
            a, b = _us(plain, r), _us(trick, r)
            out.append({"trick": name, "rows": n, "plain_us": round(a, 1),
                        "trick_us": round(b, 1), "speedup": round(a / b, 2)})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(), indent=1))


if __name__ == "__main__":
    main()
