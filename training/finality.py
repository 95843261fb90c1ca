"""Train the finality filter of a denoiser (``dlm_lsp.model.finality``) on its own decoding.

    python -m training.finality --model dlm_lsp/models/embedded --spans 3000 [--into DIR]

1. **Trajectories**: the model decodes ``--spans`` middles of the corpus's train split one
   token a step (single lines, blocks and spans, cut as the batcher cuts them, decoded as the
   server decodes them: context, healing, window). At every step each open slot of the
   window gives its features and whether its prediction is the token it ends with. Saved
   under ``runs/finality/<model>/`` (``--out``) as they are collected, so a stopped run resumes.
2. **Filter**: a 2-layer MLP fit to those labels (binary cross-entropy), spans split 90/10.
3. **Default threshold**: on ``--check`` other middles, the lowest threshold whose answers
   equal the one-token-a-step answers at least ``--agreement`` of the time, with its tokens
   per pass.
4. The filter is written as ``finality.safetensors`` beside the weights of ``--into`` (default:
   a copy of the model in the work folder) and named in its ``dlm.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from dlm_lsp.model.finality import N_FEATURES, FinalityFilter
from dlm_lsp.model.sampler import ONE_TOKEN_A_STEP, sample

RUNS = Path("runs/finality")
MODES = {"line_rest": "line", "lines": "block", "node": "block", "random_span": "span"}
THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)


def middles(corpus: Path, data: Path, n: int, seed: int) -> list[tuple[str, int, int, str]]:
    """(text with the middle cut out, cursor, middle, mode) for `n` corpus middles."""
    from dlm_lsp.model.middles import MIDDLE_KINDS, pick_middle
    from training.data import load_prepared

    prepared = load_prepared(data, corpus)
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        f = rng.randrange(len(prepared.texts))
        text = prepared.texts[f]
        kind = rng.choices([k for k, _ in MIDDLE_KINDS], [w for _, w in MIDDLE_KINDS])[0]
        a, b = pick_middle(text, prepared.spans[f], random.Random(rng.random()), kind=kind)
        if 0 < b - a <= 400 and text[a:b].strip():
            out.append((text[:a] + text[b:], a, text[a:b], MODES[kind]))
    return out


def trajectory(infiller, text: str, offset: int, mode: str,  # noqa: ANN001
               **sampler: object) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Features and labels of every step of one decode, and its result."""
    model = infiller.engine.load()
    pieces, cfg, _, _ = infiller.prepare(text, offset, mode, **sampler)
    trace: list = []
    result = sample(model.denoiser, model.spec, pieces, cfg, finality=model.finality,
                    trace=trace)
    final = result.final[0]
    ends = {model.spec.pad_token_id}
    feats, labels = [], []
    for f, tokens, pos, open_, _ in trace:
        keep = open_[0] & ~torch.isin(final[pos], torch.tensor(sorted(ends)))
        feats.append(f[0][keep])
        labels.append((tokens[0] == final[pos])[keep].float())
    if not feats:
        return torch.zeros(0, N_FEATURES), torch.zeros(0), result
    return torch.cat(feats), torch.cat(labels), result


def collect(infiller, spans: list, out: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:  # noqa: ANN001
    """Trajectories of `spans` one token a step, resumed from `out` when it has some."""
    done: list = torch.load(out, weights_only=False) if out.is_file() else []
    for k in tqdm(range(len(done), len(spans)), desc="trajectories", initial=len(done),
                  total=len(spans)):
        text, offset, _, mode = spans[k]
        f, y, _ = trajectory(infiller, text, offset, mode, **ONE_TOKEN_A_STEP)
        done.append((f, y))
        if (k + 1) % 200 == 0:
            torch.save(done, out)
    torch.save(done, out)
    return done


def fit(data: list[tuple[torch.Tensor, torch.Tensor]], epochs: int = 400,
        seed: int = 0) -> tuple[FinalityFilter, dict]:
    """The filter fit to 90 % of the spans; precision/recall at 0.5 on the other 10 %."""
    torch.manual_seed(seed)
    cut = int(len(data) * 0.9)
    x = torch.cat([f for f, _ in data[:cut]])
    y = torch.cat([t for _, t in data[:cut]])
    vx = torch.cat([f for f, _ in data[cut:]])
    vy = torch.cat([t for _, t in data[cut:]])
    model = FinalityFilter()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        logits = model.net(x).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(vx) >= 0.5
        tp = float((pred & (vy > 0.5)).sum())
        stats = {"train_positions": len(y), "val_positions": len(vy),
                 "final_share": round(float(y.mean()), 3), "train_loss": round(loss.item(), 4),
                 "val_precision": round(tp / max(float(pred.sum()), 1), 3),
                 "val_recall": round(tp / max(float((vy > 0.5).sum()), 1), 3)}
    return model.eval(), stats


def choose_threshold(infiller, spans: list, agreement: float) -> tuple[float, list[dict]]:  # noqa: ANN001
    """The lowest threshold whose answers match the one-token-a-step answers on at least
    `agreement` of `spans` (the highest one if none does), with each threshold's figures."""
    def run(**sampler: object) -> tuple[list[str], float]:
        texts, tokens, passes = [], 0, 0
        for text, offset, _, mode in spans:
            r = infiller(text, offset, mode, **sampler)
            texts.append(r.text)
            tokens += r.generated_tokens
            passes += r.forward_passes
        return texts, tokens / max(passes, 1)

    reference, base_tpp = run(**ONE_TOKEN_A_STEP)
    rows = [{"threshold": "one token a step", "agreement": 1.0, "tokens_per_pass": base_tpp}]
    chosen = THRESHOLDS[0]
    for t in THRESHOLDS:
        texts, tpp = run(filter_threshold=t)
        same = sum(a == b for a, b in zip(texts, reference, strict=True)) / len(spans)
        rows.append({"threshold": t, "agreement": round(same, 3), "tokens_per_pass": round(tpp, 2)})
        print(rows[-1], flush=True)
        if same >= agreement:
            chosen = t
    return chosen, rows


def install(model_dir: Path, target: Path, filt: FinalityFilter, threshold: float) -> Path:
    """`model_dir` with the filter beside its weights (a copy at `target` unless the same)."""
    if target.resolve() != model_dir.resolve():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(model_dir, target)
    filt.threshold = threshold
    filt.save(target / "finality.safetensors")
    spec = json.loads((target / "dlm.json").read_text())
    spec["finality"] = {"file": "finality.safetensors", "threshold": threshold}
    (target / "dlm.json").write_text(json.dumps(spec, indent=2) + "\n")
    return target


def source_arguments(ap: argparse.ArgumentParser, spans: int) -> None:
    """The model that decodes, the corpus middles it decodes and the threads it uses."""
    ap.add_argument("--model", type=Path, default=Path("dlm_lsp/models/embedded"))
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--data", type=Path, default=Path("runs/data"))
    ap.add_argument("--spans", type=int, default=spans)
    ap.add_argument("--threads", type=int, default=2)


def main(argv: list[str] | None = None) -> None:
    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source_arguments(ap, spans=3000)
    ap.add_argument("--check", type=int, default=300)
    ap.add_argument("--agreement", type=float, default=0.97)
    ap.add_argument("--into", type=Path, default=None, help="checkpoint to install it into")
    ap.add_argument("--out", type=Path, default=None,
                    help="work folder (trajectories, report; default runs/finality/<model>)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.out or RUNS / args.model.resolve().name  # trajectories are the model's own
    work.mkdir(parents=True, exist_ok=True)
    # without a filter of its own: the trajectories are the one-token-a-step decodes
    settings = Settings(model=str(args.model), threads=args.threads, parallel_filter=False)
    infiller = Infiller(Engine(settings), "denoiser")
    spans = middles(args.corpus, args.data, args.spans + args.check, seed=1)
    data = collect(infiller, spans[:args.spans], work / "trajectories.pt")
    filt, stats = fit(data)
    print(json.dumps(stats), flush=True)
    infiller.engine.load().finality = filt
    threshold, rows = choose_threshold(infiller, spans[args.spans:], args.agreement)
    target = install(args.model, args.into or work / "model", filt, threshold)
    report = {"model": str(args.model), "spans": args.spans, "check": args.check,
              "agreement_wanted": args.agreement, "threshold": threshold, **stats,
              "thresholds": rows}
    (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1), "->", target)


if __name__ == "__main__":
    main()
