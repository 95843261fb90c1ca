"""Where a campaign keeps its plan, progress and runs, and what they say of each stage.

Shared by the campaign's commands (``campaign.py``) and its evaluation (``campaign_eval.py``);
both read the paths through this module, so a test can point them elsewhere.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT  # where `python -m training.train` runs (relative plan paths start here too)
HERE = ROOT / "training" / "campaign"
PLAN, PROGRESS, LOG = HERE / "plan.json", HERE / "progress.json", HERE / "log.jsonl"
RESUME = HERE / "resume"
RUNS = ROOT / "runs" / "campaign"
EMBEDDED = ROOT / "dlm_lsp" / "models" / "embedded"
AR_TWIN = ROOT / "bench" / "models" / "ar-twin"


def load_json(path: Path, default: object) -> object:
    return json.loads(path.read_text()) if path.is_file() else default


def save_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    tmp.replace(path)


def stage_steps(plan: dict, stage: dict) -> int:
    """Optimizer steps for a stage's token budget at the plan's shape."""
    per_step = plan["batch"] * plan["accum"] * plan["procs"] * plan["seq_len"]
    return math.ceil(stage["tokens"] / per_step)


def run_state(stage: str) -> dict | None:
    """Step and tokens of a stage's full state in runs/, if this machine has it."""
    path = RUNS / stage / "state.pt"
    if not path.is_file():
        return None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    return {"step": state["step"], "tokens": state["tokens"]}


def is_complete(plan: dict, stage: dict, progress: dict) -> bool:
    state = run_state(stage["name"])
    step = state["step"] if state else progress.get(stage["name"], {}).get("step", 0)
    return step >= stage_steps(plan, stage)
