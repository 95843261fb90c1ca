"""GPU timings: the denoiser step at a 7B checkpoint's shape, against the bandwidth floor.

    python -m bench.gpu [--device cuda] [--out runs/gpu.json]

With random bf16 weights in Qwen2.5-7B's dimensions, a context of 2048 tokens and a
32-token span, it times one full forward (which fills the K/V cache) and one cached step
(the 32 slots against the cached context). A cached step has to read every weight once, so
its floor is weight bytes / memory bandwidth; the bandwidth is measured here with a large
device-to-device copy. Then the batched throughput of the embedded model: single-line
infills (512 context tokens, 24 slots) decoded in batches of growing size.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig, KVCache

# Qwen2.5-7B's config.json (hidden 3584, 28 layers, 28 query / 4 K/V heads, vocab 152064)
QWEN25_7B = DenoiserConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                           num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                           rope_theta=1e6, max_position_embeddings=32768, attention_bias=True)
TINY = DenoiserConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)


def _timed(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median milliseconds of `fn` after a warm-up call."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def bandwidth_gbs(device: torch.device, mib: int = 1024, reps: int = 10) -> float:
    """Device memory bandwidth from a copy: bytes read plus bytes written, per second."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = _timed(lambda: dst.copy_(src), device, reps)
    return 2 * src.numel() / (ms / 1e3) / 1e9


def random_model(cfg: DenoiserConfig, device: torch.device, dtype: torch.dtype) -> Denoiser:
    """Random weights without a slow CPU init: built on the meta device, then filled."""
    with torch.device("meta"):
        model = Denoiser(cfg)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
    model.init_rope(device)
    return model.eval()


@torch.inference_mode()
def step_timings(cfg: DenoiserConfig, device: torch.device, dtype: torch.dtype,
                 context: int = 2048, span: int = 32, reps: int = 10,
                 model: Denoiser | None = None) -> dict:
    """Full forward and cached step of a `span`-slot infill in a `context`-token window
    (of `model`, or of random weights in `cfg`'s shape)."""
    model = model if model is not None else random_model(cfg, device, dtype)
    cfg = model.cfg
    T = context + span
    ids = torch.randint(0, cfg.vocab_size, (1, T), device=device)
    slots = torch.arange(context // 2, context // 2 + span, device=device)
    cache = KVCache()

    def full() -> None:
        cache.keys.clear()
        cache.values.clear()
        model(ids, cache=cache, logits_at=slots)

    full_ms = _timed(full, device, reps)
    step_ms = _timed(lambda: model(ids[:, slots], positions=slots, cache=cache,
                                   logits_at=torch.arange(span, device=device)), device, reps)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    gbs = bandwidth_gbs(device)
    floor = weight_bytes / (gbs * 1e9) * 1e3
    out = {"context": context, "span": span, "dtype": str(dtype).removeprefix("torch."),
           "weights_gb": round(weight_bytes / 1e9, 2), "bandwidth_gbs": round(gbs, 1),
           "full_forward_ms": round(full_ms, 2), "cached_step_ms": round(step_ms, 2),
           "bandwidth_floor_ms": round(floor, 4),  # tiny shapes read in microseconds
           "cached_step_vs_floor": round(step_ms / floor, 2)}
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return out


@torch.inference_mode()
def batched_throughput(model: Denoiser, device: torch.device, batches: list[int],
                       context: int = 512, slots: int = 24, reps: int = 5) -> list[dict]:
    """Slot tokens decided per second when `b` infills share each denoiser step."""
    vocab = model.cfg.vocab_size
    out = []
    for b in batches:
        ids = torch.randint(0, vocab, (b, context + slots), device=device)
        pos = torch.arange(context // 2, context // 2 + slots, device=device)
        cache = KVCache()
        model(ids, cache=cache, logits_at=pos)
        step = _timed(lambda: model(ids[:, pos], positions=pos, cache=cache,  # noqa: B023
                                    logits_at=torch.arange(slots, device=device)), device, reps)
        out.append({"batch": b, "cached_step_ms": round(step, 2),
                    "slot_tokens_per_s": round(b * slots / (step / 1e3))})
    return out


def run(device: str = "cuda", shape: DenoiserConfig = QWEN25_7B,
        embedded: Path | None = None, batches: tuple[int, ...] = (1, 8, 32, 128)) -> dict:
    """All GPU figures; on CPU (tests) use a tiny `shape`."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    result: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "torch": torch.__version__,
                    "step_7b_shape": step_timings(shape, dev, dtype)}
    if embedded is not None:
        from dlm_lsp.model.checkpoint import load_checkpoint

        model = load_checkpoint(embedded, device).denoiser
        result["embedded_batched"] = batched_throughput(model, dev, list(batches))
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--embedded", type=Path, default=None,
                    help="checkpoint for the batched throughput (default: the embedded model)")
    ap.add_argument("--out", type=Path, default=Path("runs/gpu.json"))
    args = ap.parse_args(argv)
    from dlm_lsp.model.checkpoint import EMBEDDED_DIR

    result = run(args.device, embedded=args.embedded or EMBEDDED_DIR)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
