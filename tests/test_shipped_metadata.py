"""Shipped checkpoints describe their training by names, token counts and digests: never a
directory of the machine they were built on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer

from dlm_lsp.model.checkpoint import EMBEDDED_DIR
from dlm_lsp.model.denoiser import Denoiser
from training.export import export, weights_digest
from training.shapes import init_weights, model_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [EMBEDDED_DIR / "dlm.json", *sorted((ROOT / "bench" / "models").glob("*/dlm.json")),
           *sorted((ROOT / "training" / "campaign" / "resume").glob("*/dlm.json"))]
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def absolute_paths(value: object) -> list[str]:
    """Every string in a JSON value that is an absolute path (POSIX, home, Windows, UNC)."""
    if isinstance(value, str):
        return [value] if _ABSOLUTE.match(value) else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in absolute_paths(v)]
    return []


def test_the_path_check_sees_paths_of_every_kind():
    assert absolute_paths({"a": ["/work/x", {"b": "C:\\runs"}], "c": "~/m", "d": "ar-twin",
                           "e": 3}) == ["/work/x", "C:\\runs", "~/m"]


def test_no_shipped_dlm_json_holds_a_path_of_the_build_machine():
    assert EMBEDDED_DIR / "dlm.json" in SHIPPED and len(SHIPPED) >= 2
    for path in SHIPPED:
        assert absolute_paths(json.loads(path.read_text())) == [], path


def test_an_export_names_its_starting_weights_with_their_digest(tmp_path: Path):
    tok = Tokenizer.from_file(str(EMBEDDED_DIR / "tokenizer.json"))
    start = Denoiser(model_config("tiny", tok.get_vocab_size()))
    init_weights(start, seed=3)
    state_path = tmp_path / "runs" / "campaign" / "ar" / "state.pt"
    state_path.parent.mkdir(parents=True)
    torch.save({"model": start.state_dict(), "step": 4, "tokens": 1000,
                "args": {"objective": "ar"}}, state_path)
    args = {"mechanism": "eos", "objective": "diffusion", "seq_len": 64, "size": "tiny",
            "batch": 2, "init_from": str(state_path)}  # as train.py passes it: a path
    target = export(start, tok, tmp_path / "out", args, step=2, tokens=500,
                    corpus_digest="c")
    spec = json.loads((target / "dlm.json").read_text())
    init = spec["training"]["init_from"]
    assert absolute_paths(spec) == [] and str(tmp_path) not in (target / "dlm.json").read_text()
    assert init["name"] == "campaign/ar" and init["tokens"] == 1000 and init["steps"] == 4
    assert init["digest"] == weights_digest(start.state_dict())
    other = Denoiser(model_config("tiny", tok.get_vocab_size()))
    init_weights(other, seed=4)
    assert weights_digest(other.state_dict()) != init["digest"]
