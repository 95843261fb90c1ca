"""The dlm-lsp command line: complete, doctor, random-checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlm_lsp import DISTRIBUTION
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


def test_complete_refuses_a_language_the_model_was_not_trained_on(tmp_path):
    js = tmp_path / "app.js"
    js.write_text("let total = 0;\nfor (const v of values) { total += }\n")
    out = _cli("complete", str(js), "--line", "1", "--character", "34")  # the embedded model
    assert out.returncode == 2 and out.stdout == ""
    assert "python only" in out.stderr and "javascript" in out.stderr


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
    assert "sample completion      '1111' (parses)" in text and "forward passes" in text
    assert "LSP completion         1 item(s): '1111'" in text
    assert "small model shipped" not in text


@pytest.mark.parametrize("args,words", [
    (["--line", "9999", "--character", "0"], "--line 9999 is outside the file: lines are 0 to"),
    (["--line", "-1", "--character", "0"], "--line -1 is outside the file"),
    (["--line", "9", "--character", "-5"], "--character -5 is outside line 9: columns are 0 to"),
    (["--line", "9", "--character", "99"], "columns are 0 to 17"),
    (["--line", "9", "--character", "17", "--settings", "{bad json"], "--settings is not JSON"),
    (["--line", "9", "--character", "17", "--settings", "[1]"], "must be a JSON object"),
])
def test_bad_complete_input_is_one_line_and_exit_status_2(args, words, parrot_checkpoint):
    out = _cli("complete", str(DEMO), "--model", str(parrot_checkpoint), *args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: ") and words in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("make", [lambda d: Path("/bin/ls"), lambda d: d / "missing.py",
                                  lambda d: (d / "latin1.py").write_bytes(b"x = '\xe9'\n")
                                  and d / "latin1.py"])
def test_binary_missing_and_non_utf8_files_are_refused(make, tmp_path):
    out = _cli("complete", str(make(tmp_path)), "--line", "0", "--character", "0")
    assert out.returncode == 2 and out.stdout == "" and "\ufffd" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_serve_http_without_its_extra_names_the_extra_to_install():
    code = ("import sys; sys.modules['starlette'] = None; from dlm_lsp.cli import main; "
            "sys.exit(main(['serve-http']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    expected = f"error: starlette not installed: pip install '{DISTRIBUTION}[serve]'"
    assert out.stderr.strip() == expected


def test_doctor_checks_the_server_and_says_what_the_embedded_model_can_do(capsys):
    assert run_doctor(Settings(max_tokens=8)) in (0, 1)  # its sample may not parse
    text = capsys.readouterr().out
    assert "this is the small model shipped in the package" in text
    assert "LSP server             started" in text and "LSP completion" in text


def test_random_checkpoint_command_writes_a_loadable_directory(tmp_path):
    out = _cli("random-checkpoint", str(tmp_path / "ck"), "--hidden-size", "32", "--layers",
               "1", "--heads", "2", "--kv-heads", "1", "--expand")
    assert out.returncode == 0, out.stderr
    spec = json.loads((tmp_path / "ck" / "dlm.json").read_text())
    assert spec["expand_token_id"] is not None


def test_the_readme_command_line_reference_names_every_subcommand_and_option():
    import argparse

    from dlm_lsp.cli import _parser

    readme = (DEMO.parents[1] / "README.md").read_text()
    reference = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    parser = _parser()
    missing = [o for a in parser._actions for o in a.option_strings
               if o not in ("-h", "--help") and o not in reference]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if f"dlm-lsp {name}" not in reference:
                    missing.append(name)
                missing += [f"{name} {o}" for a in sub._actions for o in a.option_strings
                            if o not in ("-h", "--help") and o not in reference]
    assert missing == []
