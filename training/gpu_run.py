"""A one-shot training run for a lent GPU (or a multi-GPU node), within a fixed wall time.

    python -m training.gpu_run pack --tokens 30000000 --out runs/gpu     # here: the carry
    torchrun --nproc_per_node N -m training.gpu_run train --data runs/gpu \\
        --init dlm_lsp/models/embedded --minutes 8 --out $OUT            # there

``pack`` writes a compressed shard of the prepared token stream (``runs/data/tokens.bin``)
small enough to carry (a 30M-token shard is ~40 MB), with the tokenizer. ``train`` runs
AR + FIM pre-training for the first 70 % of the time, then adapts to masked diffusion with
shifted logits (the campaign's recipe) for the rest, in bf16 with data parallelism over the
node's GPUs, and writes the denoiser as fp16 safetensors shards of at most 16 MiB each
(plus config.json, tokenizer.json and dlm.json) under ``--out``. Rows are built from token
windows: plain AR and diffusion rows, and fill-in-the-middle rows whose middle is a random
token span, so no source text needs to travel.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dlm_lsp.model.objective import (
    Specials,
    ar_fim_row,
    ar_row,
    choose_slots,
    diffusion_row,
    infill_row,
)

SHARD_MIB = 16


def pack(data: Path, tokens: int, out: Path, seed: int = 0) -> Path:
    """A random contiguous slice of the token stream, compressed, with the tokenizer."""
    stream = np.memmap(data / "tokens.bin", dtype=np.uint16, mode="r")
    start = random.Random(seed).randrange(0, max(1, len(stream) - tokens))
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "shard.npz", tokens=np.asarray(stream[start:start + tokens]))
    (out / "tokenizer.json").write_bytes((data / "tokenizer.json").read_bytes())
    corpus = Path(json.loads((data / "corpus.json").read_text())["corpus"])
    manifest = json.loads((corpus / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({"digest": manifest["digest"], "start": start}))
    return out / "shard.npz"


class TokenRows:
    """Training rows from a token array (no text): the campaign's objectives."""

    def __init__(self, tokens: np.ndarray, sp: Specials, seq_len: int, seed: int):
        self.tokens, self.sp, self.T = tokens, sp, seq_len
        self.rng = random.Random(seed)

    def _window(self, n: int) -> list[int]:
        a = self.rng.randrange(len(self.tokens) - n)
        return self.tokens[a:a + n].astype(np.int64).tolist()

    def _fim(self, room: int) -> tuple[list[int], list[int], list[int]]:
        win = self._window(room)
        n = min(95, room // 3, max(1, int(self.rng.expovariate(1 / 12))))
        a = self.rng.randrange(1, room - n - 1)
        return win[:a], win[a:a + n], win[a + n:]

    def row(self, objective: str):  # noqa: ANN201
        T, sp, rng = self.T, self.sp, self.rng
        if objective == "ar":
            if rng.random() < 0.5:
                return ar_row(self._window(T + 1))
            prefix, middle, suffix = self._fim(T - 4)
            return ar_fim_row(prefix, middle, suffix, sp)
        if rng.random() < 0.5:
            return diffusion_row(self._window(T), sp, rng)
        prefix, middle, suffix = self._fim(T // 2)
        slots = min(choose_slots(len(middle), "eos", rng), T // 2)
        return infill_row(prefix, middle, suffix, slots, "eos", sp, rng, end_weight=2.0)

    def batch(self, size: int, objective: str, device: torch.device) -> dict:
        from dlm_lsp.model.objective import IGNORE

        rows = [self.row(objective) for _ in range(size)]
        ids = torch.full((size, self.T), self.sp.pad, dtype=torch.long)
        targets = torch.full((size, self.T), IGNORE, dtype=torch.long)
        weights = torch.zeros((size, self.T))
        key_mask = torch.zeros((size, self.T), dtype=torch.bool)
        for i, r in enumerate(rows):
            k = min(len(r.ids), self.T)
            ids[i, :k] = torch.tensor(r.ids[:k])
            targets[i, :k] = torch.tensor(r.targets[:k])
            weights[i, :k] = torch.tensor(r.weights[:k])
            key_mask[i, :k] = True
        scored = torch.tensor([r.scored for r in rows], dtype=torch.float32)
        return {k: v.to(device) for k, v in {"ids": ids, "targets": targets, "weights": weights,
                                              "key_mask": key_mask, "scored": scored}.items()}


def train(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer

    from dlm_lsp.model.denoiser import Denoiser
    from dlm_lsp.model.objective import loss_on
    from training.shapes import model_config
    from training.train import Ranks, lr_at

    ranks = Ranks()
    device = torch.device(f"cuda:{ranks.local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    ranks.setup(device)
    tok = Tokenizer.from_file(str(args.data / "tokenizer.json"))
    t = tok.token_to_id
    sp = Specials(t("<mask>"), t("<pad>"), t("<eos>"), t("<expand>"), t("<fim_prefix>"),
                  t("<fim_suffix>"), t("<fim_middle>"))
    tokens = np.load(args.data / "shard.npz")["tokens"]
    rows = TokenRows(tokens, sp, args.seq_len, args.seed + 7919 * ranks.rank)
    model = Denoiser(model_config(args.size, tok.get_vocab_size()))
    init_facts = None  # the starting weights' path, steps and tokens (they count too)
    if args.init:
        from training.train import load_weights

        init_facts = load_weights(model, args.init)
    model.to(device)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if device.type == "cuda" else {}))
    hidden = torch.compile(model.hidden_states) if args.compile else model.hidden_states
    start = time.monotonic()

    def progress() -> float:
        """How far the run is, 0..1: by wall time, or by steps when --steps is the tighter."""
        by_time = (time.monotonic() - start) / (args.minutes * 60)
        return max(by_time, step / args.steps if args.steps else 0.0)

    step = tokens_seen = ar_steps = 0
    phase = "ar"
    log = []
    while True:
        frac = ranks.max(progress())  # every rank takes the same decisions
        if frac >= 1.0:
            break
        if phase == "ar" and frac >= args.ar_share:
            phase, ar_steps = "diffusion", step
            opt = torch.optim.AdamW(params, lr=args.lr / 2, betas=(0.9, 0.95), weight_decay=0.1,
                                    **({"fused": True} if device.type == "cuda" else {}))
        # warm-up over the first 2 % of the run, constant, linear decay over the last 20 %
        lr = (args.lr if phase == "ar" else args.lr / 2) * lr_at(
            int(frac * 1000), 1000, 1.0, 20 if phase == "ar" else 0, "wsd", decay_steps=200)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = rows.batch(args.batch, phase, device)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_on(model, batch, causal=phase == "ar", shift=phase == "diffusion",
                           hidden=hidden)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ranks.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        tokens_seen += ranks.sum(int(batch["key_mask"].sum()))
        if ranks.main and step % 50 == 0:
            log.append({"step": step, "phase": phase, "tokens": tokens_seen,
                        "loss": round(loss.item(), 4)})
    if ranks.main:
        from training.export import export

        digest = json.loads((args.data / "manifest.json").read_text())["digest"]
        run_args = {"mechanism": "eos", "objective": "diffusion", "logits_shift": "True",
                    "seq_len": args.seq_len, "size": args.size, "batch": args.batch,
                    "init_from": init_facts}
        export(model.cpu(), tok, args.out / "checkpoint", run_args, step, tokens_seen, digest,
               shard_mib=args.shard_mib)
        (args.out / "gpu_log.json").write_text(json.dumps(
            {"ar_steps": ar_steps, "steps": step, "tokens": tokens_seen, "log": log}))
        print(f"{step} steps ({ar_steps} AR), {tokens_seen / 1e6:.1f}M tokens -> {args.out}")
    if dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, default=Path("runs/data"))
    p.add_argument("--tokens", type=int, default=30_000_000)
    p.add_argument("--out", type=Path, default=Path("runs/gpu"))
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, default=Path("runs/gpu"))
    t.add_argument("--init", type=Path, default=None)
    t.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu/out")))
    t.add_argument("--size", default="small")
    t.add_argument("--seq-len", type=int, default=576)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--minutes", type=float, default=8.0)
    t.add_argument("--steps", type=int, default=0, help="also stop after this many steps")
    t.add_argument("--shard-mib", type=float, default=SHARD_MIB)
    t.add_argument("--ar-share", type=float, default=0.7)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        print(pack(args.data, args.tokens, args.out))
    else:
        train(args)


if __name__ == "__main__":
    main()
