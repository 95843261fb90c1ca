"""The training loop: schedules, attention written out, data-parallel processes, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlm_lsp.model.denoiser import Denoiser
from dlm_lsp.model.random_checkpoint import stdlib_texts
from training.corpus import normalise
from training.data import prepare
from training.shapes import init_weights, model_config
from training.train import lr_at, main


def test_wsd_schedule_holds_the_peak_then_decays_linearly_to_the_floor():
    lrs = [lr_at(s, 100, 1.0, 10, "wsd", decay_steps=20) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x == 1.0 for x in lrs[10:80])
    assert lrs[80] < 1.0 and lrs[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:], strict=False))
    assert lr_at(500, 1000, 1.0, 10, "wsd") == 1.0  # no decay: a run to be continued


def test_a_run_resumed_from_weights_warms_up_again_from_its_start_step():
    assert lr_at(300, 1000, 1.0, 10, "wsd", warmup_start=300) == pytest.approx(0.1)
    assert lr_at(309, 1000, 1.0, 10, "wsd", warmup_start=300) == pytest.approx(1.0)


@pytest.mark.parametrize("causal,padded", [(False, False), (True, False), (False, True),
                                           (True, True)])
def test_written_out_attention_matches_sdpa(causal, padded):
    model = Denoiser(model_config("tiny", 300))
    init_weights(model, 0)
    ids = torch.randint(0, 300, (2, 17))
    key_mask = torch.ones(2, 17, dtype=torch.bool)
    if padded:
        key_mask[1, 12:] = False
    ref = model.hidden_states(ids, causal=causal, key_mask=key_mask)
    for block in model.model.layers:
        block.self_attn.math_attention = True
    out = model.hidden_states(ids, causal=causal, key_mask=key_mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    corpus = root / "corpus"
    corpus.mkdir()
    texts = [normalise(t) for t in stdlib_texts(120_000)]
    for split, rows in (("train", texts[:-2]), ("heldout", texts[-2:])):
        with open(corpus / f"{split}.jsonl", "w") as f:
            for i, t in enumerate(rows):
                f.write(json.dumps({"path": f"std/{i}.py", "text": t}) + "\n")
    (corpus / "manifest.json").write_text(json.dumps({"digest": "test"}))
    prepare(corpus, root / "data", vocab_size=600)
    return corpus, root / "data"


def test_two_processes_train_in_step_and_a_stopped_run_resumes(data_dirs, tmp_path: Path):
    corpus, data = data_dirs
    out = tmp_path / "run"
    common = ["--size", "tiny", "--seq-len", "64", "--batch", "2", "--procs", "2",
              "--data", str(data), "--corpus", str(corpus), "--out", str(out), "--no-compile",
              "--dtype", "fp32", "--warmup", "2", "--eval-every", "2", "--val-batches", "1",
              "--objective", "diffusion", "--logits-shift"]
    main([*common, "--steps", "3"])  # the run asserts that both ranks end with equal weights
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["step"] == 3 and state["world"] == 2 and len(state["rng"]) == 2
    assert state["rng"][0] != state["rng"][1]  # each rank draws its own rows
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert rows[0]["world"] == 2 and rows[-1]["step"] == 3 and "val_loss" in rows[-2]
    assert rows[-1]["tokens"] == state["tokens"] > 3 * 2 * 2 * 32
    main([*common, "--steps", "5"])
    assert torch.load(out / "state.pt", weights_only=False)["step"] == 5
    assert (out / "checkpoint" / "dlm.json").is_file()


def test_a_stop_file_ends_the_run_at_once_with_its_state_saved(data_dirs, tmp_path: Path):
    corpus, data = data_dirs
    out = tmp_path / "run"
    out.mkdir()
    (out / "STOP").touch()
    main(["--size", "tiny", "--seq-len", "64", "--batch", "2", "--data", str(data),
          "--corpus", str(corpus), "--out", str(out), "--no-compile", "--steps", "50",
          "--objective", "ar"])
    assert torch.load(out / "state.pt", weights_only=False)["step"] == 0
    assert not (out / "STOP").exists()


def test_rows_with_the_project_show_snippets_as_the_server_renders_them(data_dirs, tmp_path):
    import shutil

    from dlm_lsp.model.batcher import Batcher
    from training.data import load_prepared
    from training.repo_context import prepare as prepare_repo

    corpus, data = data_dirs
    local = tmp_path / "data"
    shutil.copytree(data, local)  # the shared fixture's data stays without repo context
    prepare_repo(corpus, local, per_file=2, procs=1)
    prepared = load_prepared(local, corpus)
    repo = prepared.repo
    assert repo is not None and len(repo["files"]) > 0
    k = 0
    g, a, b = repo["snippets"][repo["ptr"][k]]
    assert g != repo["files"][k] and prepared.texts[g][a:b].strip()  # another file's chunk
    for objective in ("diffusion", "ar"):
        batcher = Batcher(prepared, objective, seq_len=1024, infill_rate=1.0, repo_rate=1.0,
                          seed=3)
        rows = [batcher.row() for _ in range(8)]
        text = [prepared.tokenizer.decode(r.ids) for r in rows]
        assert all(len(r.ids) <= 1025 for r in rows)
        assert sum("# Path: " in t for t in text) >= 6  # a quarter of 1,024 holds them
    plain = Batcher(prepared, "diffusion", seq_len=512, infill_rate=1.0, seed=3)
    assert not any("# Path: " in prepared.tokenizer.decode(plain.row().ids) for _ in range(8))
