"""The shipped default model: present in the package, loadable, and useful out of the box."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from dlm_lsp import cli
from dlm_lsp.model.checkpoint import embedded_available, load_checkpoint, resolve_model_path

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_checkpoint_ships_with_the_package_and_records_its_training():
    assert embedded_available()
    model = load_checkpoint(resolve_model_path("embedded"))
    info = model.spec.training
    assert info["objective"] == "diffusion" and info["tokens"] > 1_000_000
    # the manifest of the corpus it was trained on is committed (the current one, or an
    # earlier one kept under results/history)
    digests = {json.loads(p.read_text())["digest"]
               for p in (ROOT / "training").rglob("corpus_manifest*.json")}
    assert info["corpus_digest"] in digests
    assert model.spec.max_context >= 512


def test_complete_on_a_real_file_with_no_setting_changed_gives_code_that_parses(capsys):
    demo = ROOT / "examples" / "demo.py"
    assert cli.main(["complete", str(demo), "--line", "9", "--character", "17", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "line" and out["text"].strip()
    lines = demo.read_text().splitlines(keepends=True)
    lines[9] = lines[9][:17] + out["text"] + lines[9][17:]
    ast.parse("".join(lines))
