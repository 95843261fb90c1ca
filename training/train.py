"""Train the embedded denoiser (``--objective diffusion``) or its AR twin (``--objective ar``).

One readable loop: AdamW, warm-up then cosine decay, bf16 autocast + torch.compile on a GPU,
fp32 on CPU, tqdm progress, a JSON-lines log, a resumable state file every ``--save-every``
steps, and an exported checkpoint directory (DESIGN.md format, fp16) at the end.

    python -m training.train --objective diffusion --mechanism eos --out runs/dlm \\
        --steps 3000 --batch 16 --seq-len 576 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig, count_parameters
from training.data import Batcher, load_prepared
from training.export import export

SIZES = {  # name: (hidden, layers, heads, kv heads)
    "tiny": (64, 2, 4, 2),
    "small": (256, 6, 4, 2),
    "base": (384, 6, 6, 2),
}


def model_config(size: str, vocab_size: int) -> DenoiserConfig:
    d, n_layers, heads, kv = SIZES[size]
    return DenoiserConfig(
        vocab_size=vocab_size, hidden_size=d, intermediate_size=d * 8 // 3,
        num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=kv,
        tie_word_embeddings=True, rope_theta=10000.0, max_position_embeddings=2048,
    )


def init_weights(model: Denoiser, seed: int) -> None:
    """GPT-2 style: N(0, 0.02), output projections scaled by 1/sqrt(2 * layers)."""
    torch.manual_seed(seed)
    n_layers = model.cfg.num_hidden_layers
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, 0.02 / math.sqrt(2 * n_layers))
            else:
                p.normal_(0.0, 0.02)


def loss_on(model: Denoiser, batch: dict[str, torch.Tensor], causal: bool,
            shift: bool = False) -> torch.Tensor:
    """Weighted cross-entropy, normalised by the scored positions of the batch.

    Logits are computed only where the loss is: the masked positions of a diffusion row
    (about half of them) save a third of the step on CPU, where the output layer is large.
    """
    h = model.hidden_states(batch["ids"], causal=causal, key_mask=batch["key_mask"])
    weights, targets = batch["weights"], batch["targets"]
    if shift:  # position j predicts token j + 1, as the AR model it started from (Dream)
        h, weights, targets = h[:, :-1], weights[:, 1:], targets[:, 1:]
    scored = weights > 0
    logits = model.lm_head(h[scored]).float()
    ce = F.cross_entropy(logits, targets[scored], reduction="none")
    return (ce * weights[scored]).sum() / batch["scored"].sum()


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_prepared(args.data, args.corpus)
    heldout = load_prepared(args.data, args.corpus, split="heldout")
    batcher = Batcher(data, args.objective, args.mechanism, args.seq_len, seed=args.seed)
    val_batches = [Batcher(heldout, args.objective, args.mechanism, args.seq_len,
                           seed=1000 + i).batch(args.batch) for i in range(args.val_batches)]
    model = Denoiser(model_config(args.size, data.tokenizer.get_vocab_size()))
    init_weights(model, args.seed)
    if args.init_from:  # adapt an AR model into a denoiser (Dream/DiffuCoder recipe)
        model.load_state_dict(torch.load(args.init_from, map_location="cpu",
                                         weights_only=False)["model"])
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1, fused=device.type == "cuda")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    step = tokens = 0
    elapsed = 0.0
    if state_path.exists():  # resume
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, tokens, elapsed = state["step"], state["tokens"], state["elapsed"]
        batcher.rng.setstate(state["rng"])
    causal = args.objective == "ar"
    shift = args.logits_shift
    if device.type == "cuda" and args.compile:
        model.hidden_states = torch.compile(model.hidden_states)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else None
    total, non_emb = count_parameters(model)
    manifest = json.loads((args.corpus / "manifest.json").read_text())

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            vals = [loss_on(model, {k: v.to(device) for k, v in b.items()}, causal, shift).item()
                    for b in val_batches]
        model.train()
        return sum(vals) / len(vals)

    def save() -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "tokens": tokens, "elapsed": elapsed, "rng": batcher.rng.getstate(),
                    "args": {k: str(v) for k, v in vars(args).items()}}, state_path)

    log = open(out / "log.jsonl", "a")
    if step == 0:
        log.write(json.dumps({"params": total, "non_embedding": non_emb,
                              "config": asdict(model.cfg)}) + "\n")
    bar = tqdm(total=args.steps, initial=step, desc=f"{args.objective}/{args.mechanism}")
    t_start = time.perf_counter() - elapsed
    model.train()
    while step < args.steps:
        if args.max_minutes and time.perf_counter() - t_start > args.max_minutes * 60:
            break
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in batcher.batch(args.batch).items()}
        if autocast:
            with autocast:
                loss = loss_on(model, batch, causal, shift)
        else:
            loss = loss_on(model, batch, causal, shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += int(batch["key_mask"].sum())
        elapsed = time.perf_counter() - t_start
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        row = {"step": step, "tokens": tokens, "loss": round(loss.item(), 4), "lr": lr,
               "elapsed_s": round(elapsed, 1)}
        if step % args.eval_every == 0 or step == args.steps:
            row["val_loss"] = round(evaluate(), 4)
        log.write(json.dumps(row) + "\n")
        log.flush()
        if step % args.save_every == 0:
            save()
    save()
    bar.close()
    target = export(model, data.tokenizer, out / "checkpoint", vars(args), step, tokens,
                    manifest["digest"])
    print(f"step {step}, {tokens / 1e6:.1f}M tokens, {elapsed / 60:.1f} min -> {target}")
    return target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objective", choices=["diffusion", "ar"], default="diffusion")
    ap.add_argument("--mechanism", choices=["eos", "expand"], default="eos")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--data", type=Path, default=Path("runs/data"))
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=576)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-batches", type=int, default=4)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop early (resumable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from the weights of another run's state.pt (e.g. the AR twin)")
    ap.add_argument("--logits-shift", action="store_true",
                    help="diffusion predicts token i at position i-1 (keeps AR-initialised "
                         "weights' next-token head, as Dream does)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    random.seed(0)
    train(parse_args())
