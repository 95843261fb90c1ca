"""The campaign's quick fixed evaluation, its log and plot, and the decision to ship.

Each model gets the same three sets through ``bench.infill`` (single-line mode, the server's
defaults): the obvious lines (``bench.obvious``), the first 150 held-out rest-of-line cases
(``bench.heldout``) and 200 evenly spaced HumanEval single-line tasks. A model's score is the
mean of the three percentages; a candidate replaces the shipped model only with a higher
score. A branch is evaluated once its stage is complete.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from training import campaign_state as cs

HELDOUT_LIMIT, HUMANEVAL_LIMIT = 150, 200
METRICS = ("obvious", "heldout", "humaneval")


def quick_eval(model: Path, name: str, threads: int) -> dict:
    """The three quick figures (and tokens per forward pass, latency) for one checkpoint."""
    import torch

    from bench import heldout, obvious
    from bench.humaneval import evaluate as humaneval
    from bench.humaneval import load_tasks
    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    torch.set_num_threads(threads)
    infiller = Infiller(Engine(Settings(model=str(model), threads=threads)), name)
    ob = obvious.evaluate(infiller, obvious.load_cases())
    ho = heldout.evaluate(infiller, heldout.load_cases(HELDOUT_LIMIT))
    he = humaneval(infiller, load_tasks("single", HUMANEVAL_LIMIT))
    figures = {"obvious": ob["exact"], "heldout": ho["exact"], "humaneval": he["pass@1"]}
    passes = [ob["passes_per_token"], ho["passes_per_token"], he["passes_per_token"]]
    return {**figures, "score": round(sum(figures.values()) / 3, 2),
            "tokens_per_pass": round(3 / sum(passes), 2) if all(passes) else 0.0,
            "p50_ms": he["p50_ms"], "answers": ob["answers"]}


def trained_tokens(checkpoint: Path) -> int:
    """All tokens behind a checkpoint, counting those of the weights it started from."""
    from training.export import total_tokens

    return total_tokens(json.loads((checkpoint / "dlm.json").read_text()).get("training", {}))


def candidate(stage: str) -> Path | None:
    """The newest export of a stage: from its full state, else its committed weights."""
    from training.export import export_run

    if (cs.RUNS / stage / "state.pt").is_file():
        return export_run(cs.RUNS / stage, cs.RUNS / stage / "checkpoint")
    weights = cs.load_json(cs.PROGRESS, {}).get(stage, {}).get("weights")
    return cs.ROOT / weights if weights else None


def ship(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def finish(args: argparse.Namespace) -> None:
    """Evaluate the campaign's models against the shipped ones; ship winners; log and plot."""
    plan = cs.load_json(cs.PLAN, {})
    entry: dict = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": {}, "shipped": []}
    pairs = [("dlm", cs.EMBEDDED, "denoiser"), ("twin", cs.AR_TWIN, "ar twin")]
    stages = {s["name"]: s for s in plan.get("stages", [])}
    if args.twin_from:  # an AR stage at constant LR stands in for the twin (it has no decay)
        pairs = [("twin", cs.AR_TWIN, f"ar twin (the {args.twin_from} stage)")]
    for stage, shipped, label in pairs:
        source = args.twin_from or stage
        progress = cs.load_json(cs.PROGRESS, {})
        complete = stage in stages and cs.is_complete(plan, stages[stage], progress)
        if not args.twin_from and not complete:
            # a branch mid-way has not decayed yet: its figures would not compare
            print(f"{label}: stage {stage} not complete, not evaluated")
            continue
        new = candidate(source)
        if new is None:
            continue
        ours = quick_eval(new, f"{source} (campaign)", args.threads)
        theirs = quick_eval(shipped, f"{stage} (shipped)", args.threads)
        ours["tokens"], theirs["tokens"] = trained_tokens(new), trained_tokens(shipped)
        entry["models"][stage] = {"campaign": ours, "shipped": theirs, "source": source}
        print(label, "campaign", {k: ours[k] for k in (*METRICS, "score", "tokens")})
        print(label, "shipped ", {k: theirs[k] for k in (*METRICS, "score", "tokens")})
        if ours["score"] > theirs["score"]:
            ship(new, shipped)
            entry["shipped"].append(stage)
    entry["progress"] = cs.load_json(cs.PROGRESS, {})
    entry["plan_tokens"] = {s["name"]: s["tokens"] for s in plan.get("stages", [])}
    with open(cs.LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")
    plot_log(cs.LOG, cs.HERE / "progress.png")
    if args.commit:
        commit(entry)


def commit(entry: dict) -> None:
    """Commit the campaign record, and the models that won."""
    paths = [str(p.relative_to(cs.ROOT)) for p in (cs.LOG, cs.HERE / "progress.png", cs.PROGRESS)
             if p.exists()]
    paths += [str((cs.ROOT / "training/campaign/resume").relative_to(cs.ROOT))]
    if "dlm" in entry["shipped"]:
        paths.append(str(cs.EMBEDDED.relative_to(cs.ROOT)))
    if "twin" in entry["shipped"]:
        paths.append(str(cs.AR_TWIN.relative_to(cs.ROOT)))
    subprocess.run(["git", "add", "--", *paths], cwd=cs.ROOT, check=True)
    shipped = ", ".join(entry["shipped"]) or "nothing shipped"
    scores = "; ".join(f"{k} {v['campaign']['score']} vs {v['shipped']['score']}"
                       for k, v in entry["models"].items())
    subprocess.run(["git", "commit", "-m", f"Campaign checkpoint: {shipped} ({scores})"],
                   cwd=cs.ROOT, check=True)


def plot_log(log: Path, out: Path) -> None:
    """Each quick figure against the campaign model's total tokens, with the model it was
    measured against (the one shipped then) as a faint square, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for stage, color in (("dlm", "tab:blue"), ("twin", "tab:orange")):
        pts = [(r["models"][stage]["campaign"]["tokens"] / 1e6, r["models"][stage]["campaign"])
               for r in rows if stage in r["models"]]
        if not pts:
            continue
        before = [(r["models"][stage]["shipped"]["tokens"] / 1e6, r["models"][stage]["shipped"])
                  for r in rows if stage in r["models"]]
        label = "denoiser" if stage == "dlm" else "AR twin"
        for ax, metric in zip(axes, (*METRICS, "tokens_per_pass"), strict=True):
            ax.plot([p[0] for p in pts], [p[1][metric] for p in pts], "o-", color=color,
                    label=label)
            ax.plot([p[0] for p in before], [p[1][metric] for p in before], "s", color=color,
                    alpha=0.4, label=f"{label}, the one shipped before")
    for ax, title in zip(axes, ("obvious lines, exact %", "held-out rest of line, exact %",
                                "HumanEval single-line pass@1 % (200)", "tokens per pass"),
                         strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tokens trained (M)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
