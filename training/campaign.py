"""A long training campaign on a CPU that stops and resumes wherever it is.

    nohup python -m training.campaign run > runs/campaign.log 2>&1 &   # in the background
    python -m training.campaign status
    python -m training.campaign stop              # the running stage saves and exits
    python -m training.campaign finish [--commit] # export, quick evaluation, ship if it wins
    python -m training.campaign round --ar-tokens N  # AR goes on to N tokens, branch again
    python -m training.campaign plan --size d384x8 --hours 40 --init DIR   # a new plan

The plan (``training/campaign/plan.json``) is a list of stages, each a ``training.train`` run:
AR pre-training at a constant learning rate (continued from campaign to campaign), then two
branches from its end with a final decay: the denoiser (masked diffusion with shifted logits,
Dream's recipe) and the AR twin (the same tokens of AR training, for the comparison).

Full state (weights, optimizer, data RNG) lives in ``runs/campaign/<stage>/state.pt``.
``stop`` also writes the running stage's weights (fp16) to ``training/campaign/resume/``, its
progress to ``progress.json`` and its new log rows to ``logs/<stage>.jsonl``, all committed:
on a machine without ``runs/``, a stage resumes from those weights with a fresh optimizer and
a short warm-up, at the step it reached, and its loss curve goes on from the kept log.

``finish`` exports the denoiser and the twin, runs the quick fixed evaluation (obvious lines,
held-out rest of line, HumanEval single-line subset) on them and on the shipped models,
appends the figures to ``training/campaign/log.jsonl``, redraws ``progress.png``, and copies
a model into place only when it beats the one it would replace.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from training import campaign_state as cs


def machine_flags(plan: dict, stage: dict) -> list[str]:
    """How the stage runs on this machine: the plan's processes and threads, or, with
    ``"config": "auto"``, the fastest configuration measured here (``training.autotune``),
    with gradient accumulation adjusted so a step holds the planned tokens."""
    if plan.get("config") != "auto":
        return ["--accum", str(plan["accum"]), "--procs", str(plan["procs"]),
                "--threads", str(plan["threads"])]
    from training.autotune import best_config

    flags = best_config(plan["size"], stage["objective"], plan["seq_len"], plan["batch"],
                        Path(plan["data"]), Path(plan["corpus"]))["flags"]
    procs = int(flags[flags.index("--procs") + 1])
    rows = plan["accum"] * plan["procs"]  # micro-batches per step, over all processes
    if rows % procs:
        raise SystemExit(f"{rows} micro-batches per step do not split over {procs} processes")
    return [*flags, "--accum", str(rows // procs)]


def stage_args(plan: dict, stage: dict, progress: dict) -> list[str]:
    """The ``training.train`` command line that starts or resumes `stage`."""
    name = stage["name"]
    steps = cs.stage_steps(plan, stage)
    args = ["--objective", stage["objective"], "--out", str(cs.RUNS / name),
            "--size", plan["size"], "--seq-len", str(plan["seq_len"]),
            "--batch", str(plan["batch"]), *machine_flags(plan, stage),
            "--data", plan["data"], "--corpus", plan["corpus"],
            "--steps", str(steps), "--lr", str(stage["lr"]), "--warmup", str(stage["warmup"]),
            "--schedule", "wsd", "--decay-steps", str(int(steps * stage.get("decay", 0.0))),
            "--eval-every", "200", "--save-every", "100", "--seed", str(stage.get("seed", 0))]
    if stage.get("logits_shift"):
        args.append("--logits-shift")
    if stage.get("fim_order"):
        args += ["--fim-order", stage["fim_order"]]
    if plan.get("repo_rate"):
        args += ["--repo-rate", str(plan["repo_rate"])]
    if (cs.RUNS / name / "state.pt").is_file():
        return args  # train.py resumes from its own state
    done = progress.get(name, {})
    if done.get("weights"):  # this machine lost runs/: resume from the committed weights
        return args + ["--init-from", str(cs.ROOT / done["weights"]),
                       "--start-step", str(done["step"]), "--start-tokens", str(done["tokens"])]
    parent = stage.get("from")
    if parent:
        source = cs.RUNS / parent / "state.pt"
        if not source.is_file():
            source = cs.ROOT / progress[parent]["weights"]
        return args + ["--init-from", str(source)]
    return args + ["--init-from", str(init_weights_of(plan, stage))] if stage.get("init") \
        else args


def init_weights_of(plan: dict, stage: dict) -> Path:
    """The checkpoint a first stage starts from: a directory, or ``{"grow": DIR}``, DIR grown
    to the plan's shape (``training.grow``: the same function, more parameters), made once
    under runs/ (seeded: the same weights on every machine)."""
    init = stage["init"]
    if isinstance(init, str):
        return cs.ROOT / init
    target = cs.RUNS / f"grown-{plan['size']}"
    if not (target / "model.safetensors").is_file():
        from training.grow import grow_checkpoint

        grow_checkpoint(cs.ROOT / init["grow"], plan["size"], target, seed=init.get("seed", 0))
    return target


def run(_: argparse.Namespace) -> None:
    """Run the stages in order, each to its end; a stopped stage ends the campaign run."""
    plan = cs.load_json(cs.PLAN, {})
    for stage in plan["stages"]:
        progress = cs.load_json(cs.PROGRESS, {})
        if cs.is_complete(plan, stage, progress):
            continue
        cmd = [sys.executable, "-m", "training.train", *stage_args(plan, stage, progress)]
        print("+", " ".join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=cs.CODE).returncode
        if code != 0:
            raise SystemExit(f"stage {stage['name']} failed with exit code {code}")
        if not cs.is_complete(plan, stage, cs.load_json(cs.PROGRESS, {})):
            print(f"stage {stage['name']} stopped before its end; run again to resume")
            return
        record(stage["name"])
    print("every stage of the plan is complete")


def running_stage() -> str | None:
    out = subprocess.run(["pgrep", "-af", "training.train"], capture_output=True, text=True)
    prefix = f"{cs.RUNS}/"  # stage_args always names the run directory in full
    for line in out.stdout.splitlines():
        if prefix in line:
            return line.split(prefix, 1)[1].split()[0].strip("/")
    return None


def stop(args: argparse.Namespace) -> None:
    """Ask the running stage to save and exit, wait for it, then record its progress."""
    stage = running_stage()
    if stage is None:
        print("no campaign stage is running")
    else:
        (cs.RUNS / stage / "STOP").touch()
        deadline = time.monotonic() + args.timeout
        while running_stage() and time.monotonic() < deadline:
            time.sleep(2)
        if running_stage():
            raise SystemExit(f"stage {stage} did not stop within {args.timeout} s")
    plan = cs.load_json(cs.PLAN, {})
    for st in plan["stages"]:
        if cs.run_state(st["name"]):
            record(st["name"])


def record(stage: str) -> None:
    """Write a stage's weights (fp16) under training/campaign/resume and its step/tokens to
    progress.json, so that it can resume on a machine without runs/."""
    from training.export import export_run

    state = cs.run_state(stage)
    if state is None:
        return
    target = cs.RESUME / stage
    export_run(cs.RUNS / stage, target)
    progress = cs.load_json(cs.PROGRESS, {})
    progress[stage] = {**state, "weights": str(target.relative_to(cs.ROOT))}
    cs.save_json(cs.PROGRESS, progress)
    keep_log(stage)
    print(f"{stage}: step {state['step']}, {state['tokens'] / 1e6:.1f}M tokens -> {target}")


def keep_log(stage: str) -> None:
    """Add the stage's new log rows to ``training/campaign/logs/<stage>.jsonl``, so its loss
    curve survives a machine without runs/ (a resumed run logs on from the step it resumed
    at: rows up to the last kept step are not added twice)."""
    source = cs.RUNS / stage / "log.jsonl"
    if not source.is_file():
        return
    kept = cs.HERE / "logs" / f"{stage}.jsonl"
    old = kept.read_text().splitlines() if kept.is_file() else []
    last = max((json.loads(line).get("step", 0) for line in old), default=0)
    header, steps = [], {}  # a stage restarted without its state logs its steps again:
    for line in source.read_text().splitlines():  # the later row of a step wins
        row = json.loads(line) if line.strip() else None
        if row is None:
            continue
        if "step" not in row:
            header = header or ([] if old else [line])
        elif row["step"] > last:
            steps[row["step"]] = line
    new = header + [steps[k] for k in sorted(steps)]
    if new:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("".join(f"{line}\n" for line in old + new))


def new_round(args: argparse.Namespace) -> None:
    """The next round: the stage without a parent (AR pre-training) goes on to
    `args.ar_tokens`, and the branches start again from its new end. Their old runs move to
    ``runs/campaign/archive/``; the shipped models stay until a new branch beats them."""
    if running_stage():
        raise SystemExit("a stage is running: stop it first")
    plan = cs.load_json(cs.PLAN, {})
    root = next(s for s in plan["stages"] if not s.get("from"))
    if args.ar_tokens <= root["tokens"]:
        raise SystemExit(f"--ar-tokens must exceed the current {root['tokens']}")
    root["tokens"] = args.ar_tokens
    progress = cs.load_json(cs.PROGRESS, {})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for stage in plan["stages"]:
        name = stage["name"]
        if not stage.get("from"):
            continue
        if (cs.RUNS / name).exists():
            (cs.RUNS / "archive").mkdir(parents=True, exist_ok=True)
            (cs.RUNS / name).rename(cs.RUNS / "archive" / f"{name}-{stamp}")
        progress.pop(name, None)
        if (cs.RESUME / name).exists():
            shutil.rmtree(cs.RESUME / name)
        kept = cs.HERE / "logs" / f"{name}.jsonl"
        if kept.exists():  # the new branch's curve starts again at step 1
            kept.rename(kept.with_name(f"{name}-{stamp}.jsonl"))
    cs.save_json(cs.PLAN, plan)
    cs.save_json(cs.PROGRESS, progress)
    print(f"{root['name']} goes on to {args.ar_tokens / 1e6:.0f}M tokens; "
          f"{', '.join(s['name'] for s in plan['stages'] if s.get('from'))} start again")


def branch_tokens(hours: float, ar_tps: float, dlm_tps: float, share: float) -> int:
    """Tokens of each branch when the AR stage, the denoiser branch and the twin branch
    (the same tokens as the denoiser, AR speed) fill `hours`, and the branch is `share` of
    the tokens behind each finished model."""
    ar_per_branch = (1 - share) / share
    seconds_per_token = ar_per_branch / ar_tps + 1 / dlm_tps + 1 / ar_tps
    return int(hours * 3600 / seconds_per_token)


def new_plan(args: argparse.Namespace) -> None:
    """A plan sized to the throughput measured here (``training.autotune``): the AR stage
    from `args.init` (a checkpoint, grown or not), then the denoiser and twin branches."""
    from training.autotune import best_config

    if running_stage():
        raise SystemExit("a stage is running: stop it first")
    rates = {obj: best_config(args.size, obj, args.seq_len, args.batch, Path(args.data),
                              Path(args.corpus))["tokens_per_s"] for obj in ("ar", "diffusion")}
    branch = branch_tokens(args.hours, rates["ar"], rates["diffusion"], args.branch_share)
    ar = int(branch * (1 - args.branch_share) / args.branch_share)
    plan = {"size": args.size, "seq_len": args.seq_len, "batch": args.batch,
            "accum": args.accum, "procs": 2, "threads": 1, "config": "auto",
            "repo_rate": args.repo_rate, "data": args.data,
            "corpus": args.corpus, "measured_tokens_per_s": rates, "hours": args.hours,
            "stages": [
                {"name": "ar", "objective": "ar", "tokens": ar, "lr": args.lr, "warmup": 100,
                 "decay": 0.0, "init": {"grow": args.init} if args.grow else args.init,
                 "fim_order": "spm"},
                {"name": "dlm", "objective": "diffusion", "logits_shift": True,
                 "tokens": branch, "lr": args.lr / 2, "warmup": 50, "decay": 0.3,
                 "from": "ar"},
                {"name": "twin", "objective": "ar", "tokens": branch, "lr": args.lr,
                 "warmup": 20, "decay": 0.3, "from": "ar", "seed": 1, "fim_order": "spm"}]}
    cs.save_json(cs.PLAN, plan)
    print(f"{args.size}: AR {rates['ar']} and diffusion {rates['diffusion']} tokens/s here; "
          f"AR stage {ar / 1e6:.0f}M tokens, each branch {branch / 1e6:.0f}M, "
          f"about {args.hours:g} h in all -> {cs.PLAN}")


def status(_: argparse.Namespace) -> None:
    plan = cs.load_json(cs.PLAN, {})
    progress = cs.load_json(cs.PROGRESS, {})
    for stage in plan["stages"]:
        state = cs.run_state(stage["name"]) or progress.get(stage["name"])
        step = state["step"] if state else 0
        tokens = state["tokens"] if state else 0
        print(f"{stage['name']:6} {step:7d}/{cs.stage_steps(plan, stage)} steps "
              f"{tokens / 1e6:7.1f}M tokens")
    print("running:", running_stage() or "nothing")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run")
    sub.add_parser("status")
    p = sub.add_parser("stop")
    p.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("round", help="continue AR pre-training, then branch again")
    p.add_argument("--ar-tokens", type=int, required=True)
    p = sub.add_parser("plan", help="a new plan sized to the throughput measured here")
    p.add_argument("--size", required=True)
    p.add_argument("--hours", type=float, required=True)
    p.add_argument("--init", required=True, help="checkpoint the AR stage starts from")
    p.add_argument("--grow", action="store_true",
                   help="grow --init to --size first (training.grow) instead of starting "
                        "from it as it is")
    p.add_argument("--branch-share", type=float, default=0.3,
                   help="share of a finished model's tokens trained in its branch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--accum", type=int, default=2, help="micro-batches per process and step")
    p.add_argument("--repo-rate", type=float, default=0.5,
                   help="share of infilling rows with the project's snippets")
    p.add_argument("--seq-len", type=int, default=576)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--data", default="runs/data")
    p.add_argument("--corpus", default="runs/corpus")
    p = sub.add_parser("finish")
    p.add_argument("--commit", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--twin-from", default=None, metavar="STAGE",
                   help="evaluate this AR stage (constant LR, mid-way) as the twin instead")
    args = ap.parse_args(argv)
    if args.cmd == "finish":
        from training.campaign_eval import finish

        finish(args)
        return
    {"run": run, "status": status, "stop": stop, "round": new_round,
     "plan": new_plan}[args.cmd](args)


if __name__ == "__main__":
    main()
