"""Train the embedded denoiser (``--objective diffusion``) or its AR twin (``--objective ar``).

One readable loop: AdamW, warm-up then a constant or decaying learning rate, bf16 autocast
(CPUs with AMX/AVX-512 bf16, and GPUs) and ``torch.compile``, tqdm progress, a JSON-lines log,
a resumable state file (weights, optimizer, step, tokens, every rank's data RNG), and an
exported checkpoint directory (fp16) at the end.

Data parallel over processes: ``--procs 2`` runs one single-threaded process per core on a
CPU (gloo), and the same script runs under ``torchrun --nproc_per_node N`` on a multi-GPU node
(nccl). Each rank draws its own rows; gradients are averaged with one all-reduce per step.

    python -m training.train --objective ar --out runs/ar --steps 3000 --procs 2
    touch runs/ar/STOP      # stops at the next step, saves, exports (resumable)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from tqdm import tqdm

from dlm_lsp.model.autoregressive import FIM_ORDERS
from dlm_lsp.model.batcher import Batcher
from dlm_lsp.model.checkpoint import weight_files
from dlm_lsp.model.denoiser import Denoiser, count_parameters
from dlm_lsp.model.objective import head_loss, loss_on
from training.data import load_prepared
from training.export import checkpoint_facts, export, state_facts
from training.shapes import SIZES, init_weights, model_config


def load_weights(model: Denoiser, source: Path) -> dict:
    """Weights from a run's ``state.pt`` or an exported checkpoint directory; returns what is
    known of the source's own training (steps, tokens, objective)."""
    if source.is_dir():
        state = {k: v.float() for f in weight_files(source) for k, v in load_file(str(f)).items()}
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
        model.load_state_dict(state)
        return checkpoint_facts(source, state)
    state = torch.load(source, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return state_facts(source, state)


def own_init_facts(source: Path) -> dict | None:
    """What the weights at `source` (a run's ``state.pt`` or an exported checkpoint) were
    themselves started from, as their run recorded it."""
    if source.is_dir():
        training = json.loads((source / "dlm.json").read_text()).get("training", {})
        return training.get("init_from")
    return torch.load(source, map_location="cpu", weights_only=False).get("init_facts")


def lr_at(step: int, total: int, peak: float, warmup: int, schedule: str = "cosine",
          decay_steps: int = 0, floor: float = 0.1, warmup_start: int = 0) -> float:
    """Warm-up, then cosine to `floor` x peak, or constant ("wsd") with a linear decay to
    `floor` x peak over the last `decay_steps` (none: stays at peak, a run to be continued).
    A run resumed from weights without their optimizer warms up again from `warmup_start`."""
    if step - warmup_start < warmup:
        return peak * (step - warmup_start + 1) / warmup
    if schedule == "wsd":
        into_decay = step - (total - decay_steps)
        if decay_steps <= 0 or into_decay < 0:
            return peak
        return peak * (1 - (1 - floor) * min(1.0, (into_decay + 1) / decay_steps))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def use_bf16(device: torch.device, dtype: str) -> bool:
    if dtype != "auto":
        return dtype == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Ranks:
    """This process's place in data-parallel training (world 1 without torch.distributed)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device("cpu")  # where collectives' tensors live (NCCL: the GPU)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """One all-reduce of every gradient, flattened (many small ones cost more)."""
        if self.world == 1:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def any_true(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def sum(self, value: int) -> int:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t)
        return int(t.item())

    def gather(self, obj: object) -> list:
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def train(args: argparse.Namespace) -> Path | None:
    ranks = Ranks()
    device = torch.device(args.device if args.device != "cuda" else f"cuda:{ranks.local}")
    ranks.setup(device)
    torch.set_num_threads(args.threads)
    data = load_prepared(args.data, args.corpus)
    batcher = Batcher(data, args.objective, args.mechanism, args.seq_len,
                      seed=args.seed + 7919 * ranks.rank, fixed_length=True,
                      fim_order=args.fim_order, repo_rate=args.repo_rate,
                      left_to_right_rate=args.left_to_right_rate)
    model = Denoiser(model_config(args.size, data.tokenizer.get_vocab_size()))
    init_weights(model, args.seed)
    init_facts = load_weights(model, args.init_from) if args.init_from else None
    if args.init_from and (args.start_step or args.start_tokens):
        # this run's own earlier weights: it started from what they started from (their
        # tokens include the ones it resumes at, which it counts again as its own)
        init_facts = own_init_facts(args.init_from)
    model.to(device)
    for block in model.model.layers:
        block.self_attn.math_attention = args.attention == "math"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state_path, stop_path = out / "state.pt", out / "STOP"
    step, tokens = args.start_step, args.start_tokens
    elapsed = 0.0
    if state_path.exists():  # resume
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, tokens, elapsed = state["step"], state["tokens"], state["elapsed"]
        init_facts = state.get("init_facts", init_facts)
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if len(rngs) == ranks.world:
            batcher.rng.setstate(rngs[ranks.rank])
        else:  # another world size: fresh, distinct streams
            batcher.rng.seed(args.seed + 7919 * ranks.rank + step)
    causal, shift = args.objective == "ar", args.logits_shift
    hidden, head = model.hidden_states, head_loss
    if args.compile:
        hidden = torch.compile(model.hidden_states, dynamic=False)
        head = torch.compile(head_loss, dynamic=True)  # the scored row count varies
    bf16 = use_bf16(device, args.dtype)
    total, non_emb = count_parameters(model)
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    val_batches = []
    if ranks.main:
        heldout = load_prepared(args.data, args.corpus, split="heldout")
        val_batches = [Batcher(heldout, args.objective, args.mechanism, args.seq_len,
                               seed=1000 + i, fixed_length=True,
                               fim_order=args.fim_order).batch(args.batch)
                       for i in range(args.val_batches)]

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, torch.bfloat16, enabled=bf16)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad(), autocast():
            vals = [loss_on(model, {k: v.to(device) for k, v in b.items()}, causal, shift,
                            hidden, head).item() for b in val_batches]
        model.train()
        return sum(vals) / len(vals)

    def save() -> None:
        rngs = ranks.gather(batcher.rng.getstate())
        if ranks.main:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "tokens": tokens, "elapsed": elapsed, "rng": rngs,
                        "init_facts": init_facts, "world": ranks.world,
                        "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
            tmp.replace(state_path)  # a crash mid-save never leaves a broken state

    stopping = {"signal": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(signal=True))
    log = open(out / "log.jsonl", "a") if ranks.main else None
    if log and step == 0:
        log.write(json.dumps({"params": total, "non_embedding": non_emb, "world": ranks.world,
                              "bf16": bf16, "objective": args.objective,
                              "init_from": init_facts,
                              "config": asdict(model.cfg)}) + "\n")
    bar = tqdm(total=args.steps, initial=step, desc=f"{args.objective}/{args.mechanism}",
               disable=not ranks.main)
    t_start = time.perf_counter() - elapsed
    t_window, tok_window = time.perf_counter(), 0
    model.train()
    while step < args.steps:
        out_of_time = args.max_minutes and time.perf_counter() - t_start > args.max_minutes * 60
        if ranks.any_true(bool(out_of_time) or stop_path.exists() or stopping["signal"]):
            break
        lr = lr_at(step, args.steps, args.lr, args.warmup, args.schedule, args.decay_steps,
                   warmup_start=args.start_step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum, step_tokens = 0.0, 0
        for _ in range(args.accum):
            batch = {k: v.to(device) for k, v in batcher.batch(args.batch).items()}
            with autocast():
                loss = loss_on(model, batch, causal, shift, hidden, head) / args.accum
            loss.backward()
            loss_sum += loss.item()
            step_tokens += int(batch["key_mask"].sum())
        ranks.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        new_tokens = ranks.sum(step_tokens)
        tokens += new_tokens
        tok_window += new_tokens
        elapsed = time.perf_counter() - t_start
        if not ranks.main:
            if step % args.save_every == 0:
                save()
            continue
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.3f}", tok=f"{tokens / 1e6:.1f}M")
        row = {"step": step, "tokens": tokens, "loss": round(loss_sum, 4), "lr": lr,
               "elapsed_s": round(elapsed, 1)}
        if step % 10 == 0:
            now = time.perf_counter()
            row["tokens_per_s"] = round(tok_window / (now - t_window))
            t_window, tok_window = now, 0
        if step % args.eval_every == 0 or step == args.steps:
            row["val_loss"] = round(evaluate(), 4)
        log.write(json.dumps(row) + "\n")
        log.flush()
        if step % args.save_every == 0:
            save()
    save()
    bar.close()
    # every rank applied the same averaged gradients, so their weights must agree exactly
    checksums = ranks.gather(float(sum(p.detach().double().sum() for p in params)))
    assert len(set(checksums)) == 1, f"ranks diverged: {checksums}"
    if not ranks.main:
        return None
    stop_path.unlink(missing_ok=True)
    if log:
        log.close()
    args_facts = {**vars(args), "init_from": init_facts}
    target = export(model, data.tokenizer, out / "checkpoint", args_facts, step, tokens,
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
    ap.add_argument("--batch", type=int, default=8, help="rows per rank per micro-batch")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--seq-len", type=int, default=576)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--schedule", choices=["cosine", "wsd"], default="cosine")
    ap.add_argument("--decay-steps", type=int, default=0, help="wsd: steps of final decay")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-batches", type=int, default=4)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop early (resumable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--procs", type=int, default=1,
                    help="data-parallel processes on this machine (not under torchrun)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                    help="auto: bf16 autocast where the hardware has it (AMX/AVX-512 bf16, GPU)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--attention", choices=["math", "sdpa"], default="math",
                    help="math: matmul + softmax (fastest compiled bf16 training on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--left-to-right-rate", type=float, default=0.0,
                    help="share of diffusion infilling rows whose slots are hidden from a "
                         "random one on (the states of left-to-right decoding)")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from these weights: a run's state.pt or a checkpoint directory")
    ap.add_argument("--start-step", type=int, default=0,
                    help="with --init-from and no state: continue a run's schedule from this "
                         "step (fresh optimizer, warm-up again)")
    ap.add_argument("--start-tokens", type=int, default=0)
    ap.add_argument("--fim-order", choices=FIM_ORDERS, default="spm",
                    help="AR infilling rows: the prefix before the suffix (psm) or running "
                         "straight into the middle (spm; see dlm_lsp.model.autoregressive)")
    ap.add_argument("--repo-rate", type=float, default=0.0,
                    help="share of infilling rows with the project's snippets before the "
                         "prefix (needs runs/data/repo_context.npz: training.repo_context)")
    ap.add_argument("--logits-shift", action="store_true",
                    help="diffusion predicts token i at position i-1 (keeps AR-initialised "
                         "weights' next-token head, as Dream does)")
    return ap.parse_args(argv)


def _worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    random.seed(rank)
    np.random.seed(rank)
    train(args)
    # rank 0 exports after the others are done. Then each rank leaves without running gloo's
    # C++ teardown: destroying the group (or the interpreter's exit) while the peer's
    # connection closes aborted a rank now and then ("terminate called without an active
    # exception"). Everything the run writes is closed by now; only the streams need a flush.
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.procs > 1 and "WORLD_SIZE" not in os.environ:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:  # a free loopback port for the process group
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_worker, args=(args.procs, port, args), nprocs=args.procs)
        return
    random.seed(0)
    train(args)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
