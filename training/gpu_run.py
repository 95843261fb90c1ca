"""A one-shot training run for a lent GPU (or a multi-GPU node), within a fixed wall time.

    python -m training.gpu_run pack --bytes 400000000 --out runs/gpu     # here: the carry
    torchrun --nproc_per_node 1 -m training.gpu_run train --data runs/gpu \\
        --minutes 9 --out $OUT                                          # there
    python -m training.gpu_run collect <what came back> --out runs/gpu/models   # here again

``pack`` takes whole packages of the corpus's train split, in a random order, up to a byte
budget, and writes their source (xz: about 0.5 bytes a token, against 1.3 for a compressed
token stream) with their project-snippet rows (``training.repo_context``, re-indexed) and the
tokenizer. ``train`` rebuilds the token stream and syntax spans there on every core, so the
rows are the campaign's own (syntax-node, line and rest-of-line middles, project snippets),
drawn by worker processes; then it runs the campaign's stages on the wall clock: AR + FIM
pre-training, then the denoiser (masked diffusion with shifted logits) and its AR twin, each
from the end of the first stage for the same time, in bf16, data-parallel over the node's
GPUs. Each branch's weights are written as soon as it ends, as fp16 safetensors of at most
16 MiB in few files (a lent machine returns eight), and ``collect`` turns them into
checkpoint directories here.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

SHARD_MIB = 16
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
BRANCHES = {"dlm": "diffusion", "twin": "ar"}  # branch -> objective, both from the AR stage


def pack(data: Path, corpus: Path, out: Path, max_bytes: int, seed: int = 0) -> dict:
    """Whole packages of the train split up to `max_bytes` of JSON lines, their project rows
    re-indexed to the packed files, and the tokenizer, under `out`."""
    with open(corpus / "train.jsonl", "rb") as f:
        lines = f.readlines()
    packages: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        packages.setdefault(json.loads(line)["path"].split("/", 1)[0], []).append(i)
    names = sorted(packages)
    random.Random(seed).shuffle(names)
    chosen, size = [], 0
    for name in names:
        cost = sum(len(lines[i]) for i in packages[name])
        if size + cost <= max_bytes:
            chosen.append(name)
            size += cost
    keep = sorted(i for name in chosen for i in packages[name])
    new_index = np.full(len(lines), -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    out.mkdir(parents=True, exist_ok=True)
    with lzma.open(out / "train.jsonl.xz", "wb", preset=9) as f:
        for i in keep:
            f.write(lines[i])
    repo = dict(np.load(data / "repo_context.npz"))
    files, snippets, ptr = [], [], [0]
    for k in np.flatnonzero(new_index[repo["files"]] >= 0):
        own = repo["snippets"][repo["ptr"][k]:repo["ptr"][k + 1]]
        own = own[new_index[own[:, 0]] >= 0]  # snippets come from the same package
        own[:, 0] = new_index[own[:, 0]]
        files.append((new_index[repo["files"][k]], repo["start"][k], repo["end"][k]))
        snippets.append(own)
        ptr.append(ptr[-1] + len(own))
    rows = np.asarray(files, dtype=np.int64).reshape(-1, 3)
    np.savez_compressed(out / "repo_context.npz", files=rows[:, 0].astype(np.int32),
                        start=rows[:, 1].astype(np.int32), end=rows[:, 2].astype(np.int32),
                        ptr=np.asarray(ptr, dtype=np.int64),
                        snippets=np.concatenate(snippets or [np.zeros((0, 3))]).astype(np.int32))
    shutil.copy(data / "tokenizer.json", out / "tokenizer.json")
    digest = json.loads((corpus / "manifest.json").read_text())["digest"]
    facts = {"digest": digest, "packages": sorted(chosen), "files": len(keep), "bytes": size,
             "examples": len(files)}
    (out / "manifest.json").write_text(json.dumps(facts))
    return facts


def unpack(shard: Path, work: Path, procs: int | None = None) -> tuple[Path, Path]:
    """The packed source as a corpus directory and its prepared data (tokens, spans)."""
    from training.data import prepare

    corpus, data = work / "corpus", work / "data"
    corpus.mkdir(parents=True, exist_ok=True)
    with lzma.open(shard / "train.jsonl.xz") as src, open(corpus / "train.jsonl", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    shutil.copy(shard / "manifest.json", corpus / "manifest.json")
    prepare(corpus, data, tokenizer=shard / "tokenizer.json", procs=procs)
    shutil.copy(shard / "repo_context.npz", data / "repo_context.npz")
    return corpus, data


class Rows(torch.utils.data.IterableDataset):
    """Endless batches of one objective; each worker process draws its own rows."""

    def __init__(self, prepared, objective: str, seq_len: int, batch: int, seed: int,  # noqa: ANN001
                 repo_rate: float) -> None:
        self.prepared, self.objective, self.seq_len = prepared, objective, seq_len
        self.batch, self.seed, self.repo_rate = batch, seed, repo_rate

    def __iter__(self):  # noqa: ANN204
        from dlm_lsp.model.batcher import Batcher

        info = torch.utils.data.get_worker_info()
        if info:
            os.nice(10)  # the training loop and the machine's own agent come first
        seed = self.seed * 1009 + (info.id if info else 0)
        batcher = Batcher(self.prepared, self.objective, "eos", self.seq_len, seed=seed,
                          fixed_length=True, repo_rate=self.repo_rate)
        while True:
            yield batcher.batch(self.batch)


def save_branch(model: torch.nn.Module, out: Path, name: str, shard_mib: float) -> list[Path]:
    """fp16 weights in as few files of at most `shard_mib` as they fit (the head tied to the
    embeddings stored once)."""
    from safetensors.torch import save_file

    from dlm_lsp.model.checkpoint import split_weights

    state = {k: v.detach().to(torch.float16).cpu().contiguous()
             for k, v in model.state_dict().items()}
    if model.cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    shards = split_weights(state, shard_mib)
    paths = [out / f"{name}-{i + 1}.safetensors" for i in range(len(shards))]
    for shard, path in zip(shards, paths, strict=True):
        save_file(shard, str(path))
    return paths


def compiled(model: torch.nn.Module, prepared, args: argparse.Namespace,  # noqa: ANN001
             device: torch.device) -> tuple:
    """The compiled trunk and head, run once in both attention modes before the clock starts,
    so that neither branch pays for compiling in its share of the time."""
    from torch import _dynamo

    from dlm_lsp.model.batcher import Batcher
    from dlm_lsp.model.objective import head_loss, loss_on

    _dynamo.config.suppress_errors = True  # a failed compile runs eagerly
    hidden = torch.compile(model.hidden_states, dynamic=False)
    head = torch.compile(head_loss, dynamic=True)  # the scored row count varies
    for objective in ("ar", "diffusion"):
        batch = Batcher(prepared, objective, "eos", args.seq_len, seed=args.seed,
                        fixed_length=True).batch(args.batch)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss_on(model, batch, causal=objective == "ar", shift=objective == "diffusion",
                    hidden=hidden, head=head).backward()
    model.zero_grad(set_to_none=True)
    return hidden, head


def train(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer

    from dlm_lsp.model.denoiser import Denoiser
    from dlm_lsp.model.objective import head_loss
    from training.data import load_prepared
    from training.shapes import init_weights, model_config
    from training.train import Ranks

    deadline = time.monotonic() + args.minutes * 60 - args.reserve_s
    # two cores stay free of the parsing, tokenizing and row-drawing processes, so that the
    # training loop and the machine's own services are never starved
    spare = max(1, CORES - 2)
    os.environ.setdefault("RAYON_NUM_THREADS", str(spare))  # the tokenizer's threads
    ranks = Ranks()
    device = torch.device(f"cuda:{ranks.local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    ranks.setup(device)
    if ranks.local == 0:  # one copy per node; the other ranks wait for it
        unpack(args.data, args.work, spare)
    if dist.is_initialized():
        dist.barrier()
    corpus, data = args.work / "corpus", args.work / "data"
    prepared = load_prepared(data, corpus)
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    model = Denoiser(model_config(args.size, tok.get_vocab_size()))
    init_weights(model, args.seed)
    model.to(device)
    hidden, head = compiled(model, prepared, args, device) if args.compile else (
        model.hidden_states, head_loss)
    window = max(1.0, deadline - time.monotonic())  # the training time left after unpacking
    share = (1 - args.ar_share) / 2
    plan = [("ar", "ar", args.ar_share), ("dlm", "diffusion", share), ("twin", "ar", share)]
    run = {"size": args.size, "seq_len": args.seq_len, "batch": args.batch * ranks.world,
           "world": ranks.world, "device": torch.cuda.get_device_name(device)
           if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "setup_s": round(args.minutes * 60 - args.reserve_s - window), "stages": {}}
    if ranks.main:  # what came before the stages, in case the run never ends
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "run.json").write_text(json.dumps(run))
        print(json.dumps(run), flush=True)
    ar_state = None
    for name, objective, part in plan:
        if name != "ar":
            model.load_state_dict(ar_state)
        rows = Rows(prepared, objective, args.seq_len, args.batch,
                    args.seed + 7919 * ranks.rank + len(run["stages"]), args.repo_rate)
        stage = train_stage(model, (hidden, head), rows, args, ranks, device, name,
                            window * part, round(args.steps * part) if args.steps else 0)
        run["stages"][name] = stage
        if name == "ar":
            ar_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif ranks.main:
            save_branch(model, args.out, name, args.shard_mib)
        if ranks.main:
            (args.out / "run.json").write_text(json.dumps(run))
            print(f"{name}: {stage['steps']} steps, {stage['tokens'] / 1e6:.1f}M tokens, "
                  f"{stage['seconds']:.0f} s, {stage['tokens_per_s']:,} tokens/s", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def train_stage(model: torch.nn.Module, compiled: tuple, rows: Rows,
                args: argparse.Namespace, ranks, device: torch.device, name: str,  # noqa: ANN001
                seconds: float, max_steps: int) -> dict:
    """One stage from a fresh optimizer, for `seconds` (or `max_steps`): warm-up over its first
    2 %, then constant; the branches decay linearly over their last 30 %."""
    from dlm_lsp.model.objective import loss_on
    from training.train import lr_at

    params = list(model.parameters())
    objective = rows.objective
    peak = args.lr if objective == "ar" else args.lr / 2
    opt = torch.optim.AdamW(params, lr=peak, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if device.type == "cuda" else {}))
    loader = torch.utils.data.DataLoader(
        rows, batch_size=None, num_workers=args.workers, pin_memory=device.type == "cuda",
        **({"prefetch_factor": 4} if args.workers else {}))
    batches = iter(loader)
    hidden, head = compiled
    causal, shift = objective == "ar", objective == "diffusion"
    start, step, tokens, log = time.monotonic(), 0, 0, []
    while True:
        frac = max((time.monotonic() - start) / seconds, step / max_steps if max_steps else 0.0)
        if ranks.max(frac) >= 1.0:
            break
        lr = peak * lr_at(int(frac * 1000), 1000, 1.0, 20, "wsd",
                          decay_steps=0 if name == "ar" else 300)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = next(batches)
        tokens += int(batch["key_mask"].sum())
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_on(model, batch, causal=causal, shift=shift, hidden=hidden, head=head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ranks.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 and ranks.main:
            log.append({"step": step, "tokens": tokens * ranks.world, "lr": round(lr, 6),
                        "loss": round(loss.item(), 4), "s": round(time.monotonic() - start, 1)})
            print(name, json.dumps(log[-1]), flush=True)
    del batches, loader  # its worker processes end here
    elapsed = time.monotonic() - start
    tokens = ranks.sum(tokens)
    return {"objective": objective, "steps": step, "tokens": tokens,
            "seconds": round(elapsed, 1), "tokens_per_s": round(tokens / max(elapsed, 1e-9)),
            "log": log}


def collect(source: Path, data: Path, out: Path) -> list[Path]:
    """Checkpoint directories (``out/dlm``, ``out/twin``) from what ``train`` wrote."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    from dlm_lsp.model.denoiser import Denoiser
    from training.export import export
    from training.shapes import model_config

    run = json.loads((source / "run.json").read_text())
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    digest = json.loads((data / "manifest.json").read_text())["digest"]
    ar = run["stages"]["ar"]
    made = []
    for name, objective in BRANCHES.items():
        files = sorted(source.glob(f"{name}-*.safetensors"))
        if name not in run["stages"] or not files:
            continue
        state = {k: v.float() for f in files for k, v in load_file(str(f)).items()}
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])  # tied
        model = Denoiser(model_config(run["size"], tok.get_vocab_size()))
        model.load_state_dict(state)
        stage = run["stages"][name]
        facts = {"mechanism": "eos", "objective": objective, "seq_len": run["seq_len"],
                 "logits_shift": str(objective == "diffusion"), "size": run["size"],
                 "batch": run["batch"], "fim_order": "spm",
                 "init_from": {"name": "gpu-ar", "objective": "ar", "steps": ar["steps"],
                               "tokens": ar["tokens"]}}
        made.append(export(model, tok, out / name, facts, stage["steps"], stage["tokens"],
                           digest))
    return made


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, default=Path("runs/data"))
    p.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    p.add_argument("--bytes", type=int, default=400_000_000, help="JSON lines of source to take")
    p.add_argument("--out", type=Path, default=Path("runs/gpu"))
    p.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("collect")
    c.add_argument("source", type=Path, help="the files train wrote")
    c.add_argument("--data", type=Path, default=Path("runs/gpu"), help="what pack wrote")
    c.add_argument("--out", type=Path, default=Path("runs/gpu/models"))
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, default=Path("runs/gpu"), help="what pack wrote")
    t.add_argument("--work", type=Path, default=Path("/tmp/gpu_run"))
    t.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu/out")))
    t.add_argument("--size", default="d384x8")
    t.add_argument("--seq-len", type=int, default=1024)
    t.add_argument("--batch", type=int, default=64, help="rows per GPU per step")
    t.add_argument("--lr", type=float, default=2e-3, help="AR peak; the denoiser's is half")
    t.add_argument("--minutes", type=float, default=9.0, help="the whole run, unpacking too")
    t.add_argument("--reserve-s", type=float, default=30.0, help="kept for writing the weights")
    t.add_argument("--steps", type=int, default=0, help="also stop after this many steps")
    t.add_argument("--ar-share", type=float, default=0.4, help="the rest: denoiser and twin")
    t.add_argument("--repo-rate", type=float, default=0.5)
    t.add_argument("--workers", type=int, default=max(1, min(8, CORES - 4)),
                   help="processes drawing rows (one makes about 300 rows of 1,024 a second)")
    t.add_argument("--shard-mib", type=float, default=SHARD_MIB)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        print(pack(args.data, args.corpus, args.out, args.bytes, args.seed))
    elif args.cmd == "collect":
        print(collect(args.source, args.data, args.out))
    else:
        train(args)


if __name__ == "__main__":
    main()
