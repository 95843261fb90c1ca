"""The training campaign: stages in order, resumable from runs/ or from committed weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from test_train_loop import data_dirs  # noqa: F401  (the tiny prepared corpus fixture)

from training import campaign
from training import campaign_state as cs
from training.campaign_eval import plot_log, trained_tokens
from training.export import total_tokens


@pytest.fixture()
def plan(tmp_path, monkeypatch, data_dirs):  # noqa: F811
    corpus, data = data_dirs
    here = tmp_path / "training" / "campaign"
    here.mkdir(parents=True)
    monkeypatch.setattr(cs, "ROOT", tmp_path)
    monkeypatch.setattr(cs, "HERE", here)
    monkeypatch.setattr(cs, "PLAN", here / "plan.json")
    monkeypatch.setattr(cs, "PROGRESS", here / "progress.json")
    monkeypatch.setattr(cs, "RESUME", here / "resume")
    monkeypatch.setattr(cs, "RUNS", tmp_path / "runs" / "campaign")
    plan = {"size": "tiny", "seq_len": 64, "batch": 2, "accum": 1, "procs": 1, "threads": 1,
            "data": str(data), "corpus": str(corpus), "stages": [
                {"name": "ar", "objective": "ar", "tokens": 3 * 2 * 64, "lr": 0.003,
                 "warmup": 1, "decay": 0.0, "fim_order": "spm"},
                {"name": "dlm", "objective": "diffusion", "logits_shift": True,
                 "tokens": 2 * 2 * 64, "lr": 0.002, "warmup": 1, "decay": 0.5, "from": "ar"}]}
    (here / "plan.json").write_text(json.dumps(plan))
    monkeypatch.setattr(campaign, "stage_args", _fast(campaign.stage_args))
    return plan


def _fast(stage_args):
    def wrapped(plan, stage, progress):  # no compile, fp32: seconds, not minutes
        return [*stage_args(plan, stage, progress), "--no-compile", "--dtype", "fp32",
                "--val-batches", "1"]
    return wrapped


def test_the_campaign_runs_its_stages_in_order_and_records_their_progress(plan):
    campaign.run(None)
    progress = json.loads(cs.PROGRESS.read_text())
    assert progress["ar"]["step"] == 3 and progress["dlm"]["step"] == 2
    assert (cs.RESUME / "dlm" / "model.safetensors").is_file()
    dlm_spec = json.loads((cs.RUNS / "dlm" / "checkpoint" / "dlm.json").read_text())
    assert dlm_spec["training"]["init_from"]["name"] == "campaign/ar"
    assert dlm_spec["logits_shift"] is True
    ar_spec = json.loads((cs.RUNS / "ar" / "checkpoint" / "dlm.json").read_text())
    assert ar_spec["training"]["fim_order"] == "spm"  # decoding reads the order trained on


def test_without_runs_a_stage_resumes_from_its_committed_weights_at_its_step(plan):
    campaign.run(None)
    state = torch.load(cs.RUNS / "ar" / "state.pt", weights_only=False)
    (cs.RUNS / "ar" / "state.pt").unlink()  # a new machine: runs/ is gone
    args = campaign.stage_args(plan, plan["stages"][0], json.loads(
        cs.PROGRESS.read_text()))
    at = args.index("--init-from")
    assert args[at + 1].endswith("training/campaign/resume/ar")
    assert args[args.index("--start-step") + 1] == str(state["step"])
    assert args[args.index("--start-tokens") + 1] == str(state["tokens"])
    longer = {**plan["stages"][0], "tokens": 5 * 2 * 64}  # a later campaign goes on
    plan["stages"][0] = longer
    cs.PLAN.write_text(json.dumps(plan))
    campaign.run(None)
    resumed = torch.load(cs.RUNS / "ar" / "state.pt", weights_only=False)
    assert resumed["step"] == 5 and resumed["tokens"] > state["tokens"]
    # the committed weights' tokens are the run's own, counted once
    assert total_tokens({"tokens": resumed["tokens"], "init_from": resumed["init_facts"]}) \
        == resumed["tokens"]


def test_a_branch_resumed_from_its_committed_weights_keeps_the_weights_it_started_from(plan):
    campaign.run(None)
    first = torch.load(cs.RUNS / "dlm" / "state.pt", weights_only=False)
    (cs.RUNS / "dlm" / "state.pt").unlink()
    plan["stages"][1] = {**plan["stages"][1], "tokens": 4 * 2 * 64}
    cs.PLAN.write_text(json.dumps(plan))
    campaign.run(None)
    resumed = torch.load(cs.RUNS / "dlm" / "state.pt", weights_only=False)
    assert resumed["step"] == 4
    assert resumed["init_facts"] == first["init_facts"]  # the AR stage's end, not itself


def test_the_campaign_plot_draws_each_metric_against_tokens(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = []
    for tokens, score in ((10e6, 1.0), (40e6, 4.0)):
        figures = {"obvious": score, "heldout": score, "humaneval": score,
                   "tokens_per_pass": 1.0, "tokens": tokens}
        rows.append({"models": {"dlm": {"campaign": figures, "shipped": figures},
                                "twin": {"campaign": figures, "shipped": figures}}})
    log.write_text("\n".join(json.dumps(r) for r in rows))
    plot_log(log, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_a_checkpoint_counts_the_tokens_of_the_weights_it_started_from(tmp_path: Path):
    (tmp_path / "dlm.json").write_text(json.dumps({"training": {
        "tokens": 5, "init_from": {"tokens": 7}}}))
    assert trained_tokens(tmp_path) == 12


def test_a_branch_from_a_run_state_counts_the_tokens_that_run_started_from(tmp_path: Path):
    from dlm_lsp.model.denoiser import Denoiser
    from training.shapes import model_config
    from training.train import load_weights

    model = Denoiser(model_config("tiny", 300))
    torch.save({"model": model.state_dict(), "step": 3, "tokens": 5,
                "init_facts": {"tokens": 7}, "args": {"objective": "ar"}},
               tmp_path / "state.pt")
    facts = load_weights(Denoiser(model_config("tiny", 300)), tmp_path / "state.pt")
    assert facts["tokens"] == 12 and facts["objective"] == "ar" and facts["steps"] == 3


def test_a_new_round_continues_ar_and_branches_again_from_its_new_end(plan):
    campaign.run(None)
    first = torch.load(cs.RUNS / "dlm" / "state.pt", weights_only=False)
    campaign.new_round(argparse.Namespace(ar_tokens=5 * 2 * 64))
    assert not (cs.RUNS / "dlm").exists() and (cs.RUNS / "archive").is_dir()
    assert "dlm" not in json.loads(cs.PROGRESS.read_text())
    campaign.run(None)
    ar = torch.load(cs.RUNS / "ar" / "state.pt", weights_only=False)
    dlm = torch.load(cs.RUNS / "dlm" / "state.pt", weights_only=False)
    assert ar["step"] == 5 and dlm["step"] == first["step"]
    assert dlm["init_facts"]["tokens"] == ar["tokens"] > first["init_facts"]["tokens"]
    with pytest.raises(SystemExit):
        campaign.new_round(argparse.Namespace(ar_tokens=5 * 2 * 64))  # not beyond the end


def test_an_ar_stage_mid_way_can_stand_in_for_the_twin_and_ships_only_if_better(
        tmp_path, monkeypatch):
    from training import campaign_eval

    here = tmp_path / "campaign"
    here.mkdir()
    for name, value in (("LOG", here / "log.jsonl"), ("HERE", here),
                        ("PLAN", here / "plan.json"), ("PROGRESS", here / "progress.json"),
                        ("AR_TWIN", tmp_path / "twin")):
        monkeypatch.setattr(cs, name, value)
    monkeypatch.setattr(campaign_eval, "candidate", lambda stage: tmp_path / stage)
    monkeypatch.setattr(campaign_eval, "trained_tokens", lambda path: 1)
    scores = {"ar": 10.0, "twin": 2.0}
    monkeypatch.setattr(campaign_eval, "quick_eval", lambda model, name, threads: {
        "obvious": 0.0, "heldout": 0.0, "humaneval": 0.0, "tokens_per_pass": 1.0,
        "score": scores[Path(model).name], "answers": {}})
    shipped = []
    monkeypatch.setattr(campaign_eval, "ship", lambda src, dst: shipped.append(src.name))
    args = argparse.Namespace(twin_from="ar", threads=1, commit=False)
    campaign_eval.finish(args)  # the ar stage is not complete, yet it is evaluated
    entry = json.loads((here / "log.jsonl").read_text().splitlines()[-1])
    assert entry["models"]["twin"]["source"] == "ar" and shipped == ["ar"]
    scores["ar"] = 1.0
    campaign_eval.finish(args)
    assert shipped == ["ar"]  # not better: nothing shipped


def test_a_plan_fills_its_hours_at_the_measured_speeds():
    from training.campaign import branch_tokens

    # equal speeds, branch = half of a model's tokens: AR stage, dlm and twin take a third each
    assert branch_tokens(1.0, 1000, 1000, 0.5) == 1_200_000
    # a faster denoiser leaves more tokens for every stage
    assert branch_tokens(1.0, 1000, 4000, 0.5) > 1_200_000


def test_an_auto_plan_runs_the_configuration_measured_fastest_with_the_same_step(monkeypatch):
    from training import autotune
    from training.campaign import machine_flags

    one_process = ["--dtype", "bf16", "--attention", "math", "--compile", "--procs", "1",
                   "--threads", "2"]
    monkeypatch.setattr(autotune, "best_config", lambda *a, **k: {"flags": one_process})
    plan = {"size": "tiny", "seq_len": 64, "batch": 2, "accum": 2, "procs": 2, "threads": 1,
            "data": "d", "corpus": "c"}
    assert machine_flags(plan, {"objective": "ar"}) == [
        "--accum", "2", "--procs", "2", "--threads", "1"]
    flags = machine_flags({**plan, "config": "auto"}, {"objective": "ar"})
    assert flags[flags.index("--procs") + 1] == "1" and flags[-2:] == ["--accum", "4"]


def test_autotune_tries_bf16_only_where_the_cpu_has_it_and_reads_its_cache(
        monkeypatch, tmp_path):
    from training import autotune

    monkeypatch.setattr(autotune, "has_bf16", lambda: False)
    names = autotune.candidates(cores=2)
    assert names and not any(n.startswith("bf16") for n in names)
    assert not any("2x1" in n for n in autotune.candidates(cores=1))
    cache = tmp_path / "autotune.json"
    key = autotune.machine_key("tiny", "ar", 64, 2)
    cache.write_text(json.dumps({key: {"name": "fp32 eager 1x2", "flags": ["x"],
                                       "tokens_per_s": 5}}))

    def never(*a, **k):
        raise AssertionError("measured again although the cache knows this machine")
    monkeypatch.setattr(autotune, "measure", never)
    assert autotune.best_config("tiny", "ar", 64, 2, cache=cache)["tokens_per_s"] == 5
    calls = []
    monkeypatch.setattr(autotune, "measure", lambda flags, *a, **k: calls.append(flags) or {
        "tokens_per_s": 10 * len(calls), "wall_s": 1})
    best = autotune.best_config("tiny", "objective-b", 64, 2, cache=cache)
    assert best["tokens_per_s"] == 10 * len(calls) and best["flags"] == calls[-1]
    assert len(json.loads(cache.read_text())) == 2


def test_the_kept_log_grows_across_machines_without_repeating_steps(plan):
    runs = cs.RUNS / "ar"
    runs.mkdir(parents=True)
    header = json.dumps({"params": 10, "objective": "ar"})

    def steps(a: int, b: int) -> list[str]:
        return [json.dumps({"step": k, "loss": 3.0 - k / 10}) for k in range(a, b)]
    # an attempt that stopped before its first save, then the run from step 1 again
    (runs / "log.jsonl").write_text("\n".join([header, *steps(1, 3), header, *steps(1, 5)])
                                    + "\n")
    campaign.keep_log("ar")
    # a new machine resumed at step 4 from the committed weights: its log starts there
    (runs / "log.jsonl").write_text("\n".join([header, *steps(5, 8)]) + "\n")
    campaign.keep_log("ar")
    campaign.keep_log("ar")  # recording twice adds nothing
    rows = [json.loads(line) for line in (cs.HERE / "logs" / "ar.jsonl").read_text().splitlines()]
    assert rows[0] == {"params": 10, "objective": "ar"}
    assert [r["step"] for r in rows[1:]] == list(range(1, 8))
