"""The dlm-lsp command line: complete, doctor, random-checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

from dlm_lsp.config import Settings
from dlm_lsp.doctor import run_doctor

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlm_lsp", *args], capture_output=True,
                          text=True, timeout=120)


def test_complete_prints_json_with_range_and_figures(parrot_checkpoint):
    out = _cli("complete", str(DEMO), "--line", "9", "--character", "17",
               "--model", str(parrot_checkpoint), "--settings", '{"maxTokens": 5}', "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["text"] == "11111" and data["mode"] == "line"
    assert data["range"]["start"] == {"line": 9, "character": 17}
    assert data["stats"]["forward_passes"] == 1


def test_complete_explains_a_missing_model_and_fails(tmp_path):
    out = _cli("complete", str(DEMO), "--line", "9", "--character", "17",
               "--model", str(tmp_path / "none"))
    assert out.returncode == 1 and 'Set the "model" setting' in out.stderr


def test_doctor_explains_how_to_point_model_when_the_embedded_one_is_absent(
        monkeypatch, tmp_path, capsys):
    import dlm_lsp.model.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "EMBEDDED_DIR", tmp_path / "embedded")
    assert run_doctor(Settings()) == 1
    text = capsys.readouterr().out
    assert "embedded default model is not in this install" in text
    assert 'Set the "model" setting' in text and "dlm-lsp random-checkpoint" in text


def test_doctor_times_a_sample_completion(parrot_checkpoint, capsys):
    assert run_doctor(Settings(model=str(parrot_checkpoint), max_tokens=4)) == 0
    text = capsys.readouterr().out
    assert "sample completion      '1111'" in text and "forward passes" in text


def test_random_checkpoint_command_writes_a_loadable_directory(tmp_path):
    out = _cli("random-checkpoint", str(tmp_path / "ck"), "--hidden-size", "32", "--layers",
               "1", "--heads", "2", "--kv-heads", "1", "--expand")
    assert out.returncode == 0, out.stderr
    spec = json.loads((tmp_path / "ck" / "dlm.json").read_text())
    assert spec["expand_token_id"] is not None
