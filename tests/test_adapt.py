"""Learning a repository (``dlm-lsp adapt``) at a tiny shape: refused below the minimum of own
code, otherwise a checkpoint in the user's cache that the server picks up for that
workspace, and drops on --forget."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dlm_lsp import adapt
from dlm_lsp.config import Settings
from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.pipeline.engine import Engine

CODE = '''def parse_record(line, separator=","):
    """Split one record of the ledger into its fields."""
    fields = [f.strip() for f in line.split(separator)]
    return {"account": fields[0], "amount": float(fields[1])}


def total_of(records):
    return sum(r["amount"] for r in records)
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "ledger"
    (root / "ledger").mkdir(parents=True)
    for i in range(6):
        (root / "ledger" / f"part{i}.py").write_text(CODE.replace("record", f"record{i}"))
    (root / "notes.txt").write_text("not code\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "init"], check=True)
    return root


def test_too_little_code_is_refused_politely(repo, random_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("DLM_LSP_CACHE", str(tmp_path / "cache"))
    said: list[str] = []
    assert adapt.adapt(repo, random_checkpoint, say=said.append) is None
    assert "at least 50,000" in said[0] and "Nothing was changed" in said[0]
    assert adapt.find_adapted(repo) is None


def test_a_repository_is_learnt_kept_in_the_cache_used_by_the_server_and_forgotten(
        repo, random_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("DLM_LSP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(adapt, "MIN_TOKENS", 100)
    said: list[str] = []
    target = adapt.adapt(repo / "ledger", random_checkpoint, cap=2 * adapt.BATCH * 64,
                         say=said.append, seed=1)
    assert target is not None and target.parent.parent == tmp_path / "cache"
    assert "tokens of" in said[0] and "min on this CPU" in said[0]
    facts = json.loads((target / "dlm.json").read_text())["training"]["adapted"]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert facts["repository"] == "ledger" and facts["commit"] == head and facts["files"] == 6
    assert adapt.find_adapted(repo) == target == adapt.find_adapted(repo / "ledger")
    assert load_checkpoint(target).spec.mask_token_id == \
        load_checkpoint(random_checkpoint).spec.mask_token_id
    # the server's engine serves it while the model setting is "embedded"
    from dlm_lsp.protocol.server import DlmServer

    server = DlmServer()
    server.roots = [repo.as_uri()]
    server.pick_adapted()
    assert server.engine.adapted == target
    server.settings = Settings(model="embedded", adapted=False)
    server.pick_adapted()
    assert server.engine.adapted is None
    engine = Engine(Settings(model="embedded"))
    engine.use_adapted(target)
    assert engine.load().path == target
    assert adapt.forget(repo) and adapt.find_adapted(repo) is None and not adapt.forget(repo)


def test_an_adapted_model_keeps_the_finality_filter_its_model_shipped(
        repo, random_checkpoint, monkeypatch, tmp_path):
    from dlm_lsp.model.finality import FinalityFilter
    from training.finality import install

    with_filter = install(random_checkpoint, tmp_path / "with-filter", FinalityFilter(), 0.7)
    monkeypatch.setenv("DLM_LSP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(adapt, "MIN_TOKENS", 100)
    target = adapt.adapt(repo / "ledger", with_filter, cap=adapt.BATCH * 64,
                         say=lambda _m: None, seed=1)
    assert target is not None
    loaded = load_checkpoint(target)
    assert loaded.finality is not None and loaded.finality.threshold == 0.7
    assert json.loads((target / "dlm.json").read_text())["finality"] == {
        "file": "finality.safetensors", "threshold": 0.7}
