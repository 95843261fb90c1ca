"""Self-distillation for parallel decoding: the denoiser learns to be sure of its own answers
several slots at a time.

    python -m training.distill --model dlm_lsp/models/embedded --spans 6000 --minutes 90 \\
        [--out runs/distill]                      # resumable; exports runs/distill/checkpoint

A denoiser's confidence converges one slot after another: decoding one token a step, the
next slot becomes sure only once the one before it is written. dParallel (Chen et al., 2025,
"dParallel: Learnable Parallel Decoding for dLLMs", certainty-forcing distillation) trains
the model on its own decoding: the answers it writes one token a step are the targets (so
what it answers stays), and an entropy term makes every masked slot whose prediction is
already that answer more certain at once. d3LLM (Qian et al., 2025) builds the training
states from the model's own *pseudo-trajectory*: the order in which it unmasked the slots.

1. **Trajectories** (``runs/distill/trajectories.pt``, resumable): corpus middles of the
   train split, decoded one token a step as the server decodes them; kept per middle: the
   pieces, the final slot tokens (answer, end, pads) and the step each slot was written at.
2. **Training**: a state is a step k of a trajectory, the slots written before k shown and the
   rest masked; the loss is the cross-entropy of the masked slots toward the model's answer
   plus ``--entropy-weight`` x the entropy of those whose prediction already is it, summed with
   the ordinary diffusion loss of as many corpus rows (``training.data.Batcher``), which keeps
   the rest of what the model knows. AdamW, warm-up and linear decay over ``--minutes``.
3. The state saves every 50 steps (``state.pt``); the end exports a checkpoint beside it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.model.sampler import ONE_TOKEN_A_STEP, sample
from training.finality import middles, source_arguments

Example = dict[str, torch.Tensor]


def record(infiller, text: str, offset: int, mode: str) -> Example | None:  # noqa: ANN001
    """One middle decoded one token a step: its row (fixed tokens and slots), the final
    token of every slot and the step each slot was committed at."""
    model = infiller.engine.load()
    pieces, cfg, _, _ = infiller.prepare(text, offset, mode, **ONE_TOKEN_A_STEP)
    trace: list = []
    result = sample(model.denoiser, model.spec, pieces, cfg, trace=trace)
    ids: list[int] = []
    slot: list[bool] = []
    for p in pieces:
        if isinstance(p, int):
            ids += [model.spec.mask_token_id] * p
            slot += [True] * p
        else:
            ids += list(p)
            slot += [False] * len(p)
    final = result.final[0]
    step_of = torch.full((len(ids),), len(trace), dtype=torch.long)
    for k, (_, _, pos, _, picked) in enumerate(trace):
        committed = pos[picked[0]]
        step_of[committed] = torch.minimum(step_of[committed], torch.tensor(k))
    if not result.candidates[0].spans[0]:
        return None
    return {"ids": torch.tensor(ids), "slot": torch.tensor(slot), "final": final.clone(),
            "step": step_of, "steps": torch.tensor(len(trace))}


def collect(infiller, spans: list, out: Path) -> list[Example]:  # noqa: ANN001
    done: list = torch.load(out, weights_only=False) if out.is_file() else []
    for k in tqdm(range(len(done), len(spans)), desc="trajectories", initial=len(done),
                  total=len(spans)):
        text, offset, _, mode = spans[k]
        done.append(record(infiller, text, offset, mode))
        if (k + 1) % 250 == 0:
            torch.save(done, out)
    torch.save(done, out)
    return [e for e in done if e is not None]


def state_of(example: Example, rng: random.Random, mask_id: int) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """(input ids, masked slots) of a step drawn from the example's own trajectory."""
    k = rng.randrange(int(example["steps"]) + 1) if int(example["steps"]) else 0
    masked = example["slot"] & (example["step"] >= k)
    if not bool(masked.any()):
        masked = example["slot"] & (example["step"] >= int(example["step"].max()))
    ids = torch.where(masked, torch.full_like(example["ids"], mask_id), example["final"])
    ids = torch.where(example["slot"], ids, example["ids"])
    return ids, masked


def distill_loss(model, examples: list[Example], rng: random.Random, mask_id: int,  # noqa: ANN001
                 pad_id: int, shift: bool, entropy_weight: float) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the masked slots toward the model's own answer, plus the entropy of
    those it already predicts right (certainty forcing); and the two terms for the log."""
    states = [state_of(e, rng, mask_id) for e in examples]
    T = max(len(ids) for ids, _ in states)
    ids = torch.full((len(states), T), pad_id, dtype=torch.long)
    masked = torch.zeros((len(states), T), dtype=torch.bool)
    key_mask = torch.zeros((len(states), T), dtype=torch.bool)
    targets = torch.full((len(states), T), pad_id, dtype=torch.long)
    for i, ((row, m), e) in enumerate(zip(states, examples, strict=True)):
        ids[i, :len(row)], masked[i, :len(row)] = row, m
        key_mask[i, :len(row)] = True
        targets[i, :len(row)] = e["final"]
    h = model.hidden_states(ids, key_mask=key_mask)
    if shift:  # position j predicts token j + 1 (Dream's shifted logits)
        h, masked, targets = h[:, :-1], masked[:, 1:], targets[:, 1:]
    logits = model.lm_head(h[masked]).float()
    tgt = targets[masked]
    ce = F.cross_entropy(logits, tgt)
    logp = logits.log_softmax(-1)
    right = logits.argmax(-1) == tgt
    entropy = -(logp.exp() * logp).sum(-1)
    ent = entropy[right].mean() if bool(right.any()) else logits.sum() * 0
    return ce + entropy_weight * ent, {"ce": ce.item(), "entropy": ent.item()}


def train(args: argparse.Namespace) -> Path:
    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.model.batcher import Batcher
    from dlm_lsp.model.objective import loss_on
    from dlm_lsp.pipeline.engine import Engine
    from training.data import load_prepared
    from training.export import export

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    infiller = Infiller(Engine(Settings(model=str(args.model), threads=args.threads,
                                        parallel_filter=False)), "denoiser")
    spans = middles(args.corpus, args.data, args.spans, seed=2)
    examples = collect(infiller, spans, args.out / "trajectories.pt")
    loaded = load_checkpoint(args.model, quantize="none")
    model, spec = loaded.denoiser, loaded.spec
    model.train()
    data = load_prepared(args.data, args.corpus)
    batcher = Batcher(data, "diffusion", seq_len=spec.max_context, seed=3, fixed_length=True,
                      repo_rate=args.repo_rate)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    state_path = args.out / "state.pt"
    step, elapsed = 0, 0.0
    rng = random.Random(4)
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        rng.setstate(state["rng"])
        batcher.rng.setstate(state["batcher_rng"])
    log = open(args.out / "log.jsonl", "a")
    t0 = time.perf_counter() - elapsed
    budget = args.minutes * 60
    bar = tqdm(desc="distill", initial=step)
    while time.perf_counter() - t0 < budget:
        frac = (time.perf_counter() - t0) / budget
        lr = args.lr * min(1.0, (step + 1) / 20) * (1 - frac)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        batch = [examples[rng.randrange(len(examples))] for _ in range(args.batch)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss, parts = distill_loss(model, batch, rng, spec.mask_token_id, spec.pad_token_id,
                                       spec.logits_shift, args.entropy_weight)
            corpus = loss_on(model, batcher.batch(args.batch), causal=False,
                             shift=spec.logits_shift)
        (loss + corpus).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(ce=f"{parts['ce']:.3f}", ent=f"{parts['entropy']:.3f}")
        log.write(json.dumps({"step": step, "lr": lr, **{k: round(v, 4) for k, v in
                                                         parts.items()},
                              "corpus": round(corpus.item(), 4),
                              "elapsed_s": round(time.perf_counter() - t0, 1)}) + "\n")
        log.flush()
        if step % 50 == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed": time.perf_counter() - t0, "rng": rng.getstate(),
                        "batcher_rng": batcher.rng.getstate()}, state_path)
    bar.close()
    training = spec.training
    digest = json.loads((args.corpus / "manifest.json").read_text())["digest"]
    run_args = {"mechanism": "eos", "objective": "diffusion", "logits_shift": str(
        spec.logits_shift), "seq_len": spec.max_context, "size": training.get("size", "small"),
        "batch": args.batch, "init_from": str(args.model)}
    target = export(model, loaded.tokenizer, args.out / "checkpoint", run_args, step,
                    step * args.batch * spec.max_context, digest)
    spec_path = target / "dlm.json"
    out_spec = json.loads(spec_path.read_text())
    out_spec["training"]["distilled"] = {"spans": len(examples), "steps": step,
                                         "entropy_weight": args.entropy_weight,
                                         "repo_rate": args.repo_rate}
    spec_path.write_text(json.dumps(out_spec, indent=2) + "\n")
    plot(args.out / "log.jsonl", args.out / "curves.png")
    return target


def plot(log: Path, png: Path, smooth: int = 50) -> None:
    """The distillation's curves: cross-entropy toward the model's own answers, entropy of the
    slots already right, and the corpus rows' diffusion loss (moving means of `smooth` steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.plot import smooth as moving_mean

    rows = [json.loads(line) for line in log.read_text().splitlines()]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, key, title in zip(axes, ("ce", "entropy", "corpus"),
                              ("cross-entropy toward its own answer", "entropy of right slots",
                               "corpus rows, diffusion loss"), strict=True):
        ax.plot([r["step"] for r in rows], moving_mean([r[key] for r in rows], smooth))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source_arguments(ap, spans=6000)
    ap.add_argument("--minutes", type=float, default=90)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--entropy-weight", type=float, default=0.5)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="autocast of the training forward (bf16 where the CPU has the units: "
                         "python -m training.autotune says)")
    ap.add_argument("--repo-rate", type=float, default=0.0,
                    help="share of the corpus rows with project snippets before the prefix "
                         "(training.repo_context), as in training.train")
    ap.add_argument("--out", type=Path, default=Path("runs/distill"))
    args = ap.parse_args(argv)
    print(train(args))


if __name__ == "__main__":
    main()
