"""Loss curves of training runs as one PNG.

    python -m training.plot runs/campaign/ar runs/campaign/dlm runs/campaign/twin
    python -m training.plot ar=runs/campaign/ar "dlm, round 1=runs/campaign/archive/dlm-..."

Training loss (smoothed) and held-out loss against tokens seen, one line per run. The
diffusion loss is the 1/t-weighted masked cross-entropy (an ELBO bound per token), the AR
loss a plain next-token cross-entropy, so the two panels are not on the same scale. A run
initialised from the AR twin starts at the AR tokens its weights had already seen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_log(run: Path) -> tuple[dict, list[dict]]:
    """A run's header (its first line: model, objective, starting weights) and its steps."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    header = rows[0] if rows and "step" not in rows[0] else {}
    return header, [r for r in rows if "step" in r]


def is_ar(run: Path, header: dict) -> bool:
    objective = header.get("objective")
    if objective:
        return objective == "ar"
    return run.name in ("ar", "twin") or "ar" in run.name.split("-")


def init_tokens(header: dict) -> int:
    """Tokens the run's starting weights had already seen (an AR-initialised denoiser)."""
    init = header.get("init_from") or {}
    return int(init.get("tokens") or 0) if isinstance(init, dict) else 0


def smooth(values: list[float], k: int = 20) -> list[float]:
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-k:]
        out.append(sum(acc) / len(acc))
    return out


def parse_run(arg: str) -> tuple[str, Path]:
    """``LABEL=PATH`` or a bare path (labelled by its folder name)."""
    label, sep, path = arg.rpartition("=")
    return (label, Path(path)) if sep else (Path(arg).name, Path(arg))


def plot(runs: list[Path | tuple[str, Path]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for item in runs:
        name, run = item if isinstance(item, tuple) else (item.name, item)
        header, rows = read_log(run)
        ax = axes[1] if is_ar(run, header) else axes[0]
        start = init_tokens(header)  # counted from the tokens its weights had seen
        tokens = [(start + r["tokens"]) / 1e6 for r in rows]
        ax.plot(tokens, smooth([r["loss"] for r in rows]), label=f"{name} train", lw=1)
        val = [((start + r["tokens"]) / 1e6, r["val_loss"]) for r in rows if "val_loss" in r]
        if val:
            ax.plot(*zip(*val, strict=True), "o-", ms=3, label=f"{name} held-out")
    axes[0].set_title("masked diffusion (1/t-weighted masked CE)")
    axes[1].set_title("autoregressive (next-token CE on text and FIM rows)")
    for ax in axes:
        ax.set_xlabel("tokens seen (M)")
        ax.set_ylabel("loss (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=parse_run, help="run folder, or LABEL=FOLDER")
    ap.add_argument("--out", type=Path, default=Path("training/results/loss.png"))
    args = ap.parse_args(argv)
    plot(args.runs, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
