"""Each published family at its real shape, loaded through its adapter: memory, step time,
and its published recipe against the editor's fast path.

    python -m bench.families_gpu [--families dream llada ...] [--out runs/families_gpu.json]

For every family a random-weight checkpoint is written in the family's own layout (its
config keys, weight names and tokenizer files, ``random_checkpoint.make_family_checkpoint``)
at the shape of its published model, loaded with ``load_checkpoint`` in bf16 on the GPU as a
user's checkpoint would be, and timed like ``bench.gpu`` (2048 context tokens, 32 slots).
Records load time, weight and peak memory, full-forward and cached-step milliseconds; then
decodes the same prompts with the family's published recipe (``model/recipes.py``, greedy)
and with the fast path (dual K/V cache, unmask window, threshold 0.9): milliseconds and
forward passes per completion for each, and how often the two write the same tokens.
Random weights make the agreement a property of the decoders, not of a trained model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu import step_timings
from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.model.random_checkpoint import make_family_checkpoint

# published shapes: (hidden, layers, heads, kv heads, intermediate), from each config.json
QWEN25_7B = (3584, 28, 28, 4, 18944)
SHAPES = {
    "dream": QWEN25_7B,  # Dream-v0 7B, Dream-Coder-v0 7B, DiffuCoder 7B
    "dreamon": QWEN25_7B,
    "fast-dllm-v2": QWEN25_7B,  # Fast_dLLM_v2_7B
    "llada": (4096, 32, 32, 32, 12288),  # LLaDA-8B
    "open-dcoder": (896, 24, 14, 2, 4864),  # Qwen2.5-Coder-0.5B
}
TINY = (64, 2, 4, 2, 128)


def measure(family: str, shape: tuple[int, int, int, int, int], device: str,
            workdir: Path, context: int = 2048, span: int = 32) -> dict:
    """Write, load and time one family's checkpoint of `shape`."""
    hidden, layers, heads, kv, inter = shape
    path = make_family_checkpoint(workdir / family, family, hidden_size=hidden,
                                  num_layers=layers, num_heads=heads, num_kv_heads=kv,
                                  intermediate_size=inter)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = load_checkpoint(path, device=device, quantize="none",
                            dtype="bfloat16" if dev.type == "cuda" else "float32")
    load_s = time.perf_counter() - t0
    out = {"family": family, "shape": dict(zip(
        ("hidden", "layers", "heads", "kv_heads", "intermediate"), shape, strict=True)),
        "load_s": round(load_s, 1),
        "weights_gb": round(sum(p.numel() * p.element_size()
                                for p in model.denoiser.parameters()) / 1e9, 2)}
    out.update(step_timings(model.denoiser.cfg, dev, next(model.denoiser.parameters()).dtype,
                            context=context, span=span, reps=5, model=model.denoiser))
    out.update(recipe_vs_fast(model, span=span, context=min(context, 256)))
    del model
    shutil.rmtree(path, ignore_errors=True)
    return out


def recipe_vs_fast(model: Any, span: int, context: int, prompts: int = 8) -> dict:
    """The published recipe and the fast path on the same prompts: time, passes, agreement."""
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine, decode

    gen = torch.Generator().manual_seed(0)
    vocab = min(model.tokenizer.get_vocab_size(), 1000)  # ordinary tokens of the tokenizer
    rows = {"published": [], "fast": []}
    outputs: dict[str, list] = {"published": [], "fast": []}
    for decoding in ("published", "fast"):
        engine = Engine(Settings(model=str(model.path), decoding=decoding, temperature=0.0))
        engine._model = model
        cfg = engine.sampler_config(model, temperature=0.0, max_steps=span)
        for _ in range(prompts):
            ids = torch.randint(0, vocab, (context,), generator=gen).tolist()
            cut = context // 2
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = decode(model, [ids[:cut], span, ids[cut:]], cfg)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            rows[decoding].append(((time.perf_counter() - t0) * 1e3, result.forward_passes))
            outputs[decoding].append(result.candidates[0].spans)
    same = sum(a == b for a, b in zip(outputs["published"], outputs["fast"], strict=True))
    out = {}
    for decoding, values in rows.items():
        ms = sorted(v[0] for v in values)
        out[f"{decoding}_ms_p50"] = round(ms[len(ms) // 2], 1)
        out[f"{decoding}_passes_mean"] = round(sum(v[1] for v in values) / len(values), 1)
    out["fast_agrees_with_published"] = f"{same}/{prompts}"
    return out


def run(device: str, families: list[str], tiny: bool = False) -> dict:
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else device,
              "torch": torch.__version__, "families": []}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in families:
            result["families"].append(measure(fam, TINY if tiny else SHAPES[fam], device,
                                              Path(tmp), context=64 if tiny else 2048,
                                              span=8 if tiny else 32))
            print(json.dumps(result["families"][-1]), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--families", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU smoke run)")
    ap.add_argument("--out", type=Path, default=Path("runs/families_gpu.json"))
    args = ap.parse_args(argv)
    result = run(args.device, args.families, args.tiny)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
