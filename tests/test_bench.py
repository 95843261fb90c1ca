"""Benchmark plumbing: the AR twin's cached decoding and HumanEval-infilling scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.ar_twin import generate
from bench.humaneval import DATA, editor_view, load_tasks, passes, program
from bench.infill import finish
from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.model.denoiser import Denoiser
from dlm_lsp.model.random_checkpoint import stdlib_texts
from training.export import export
from training.tokenizer import train_tokenizer
from training.train import init_weights, model_config

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="module")
def ar_checkpoint(tmp_path_factory) -> Path:
    tok = train_tokenizer(stdlib_texts(200_000), vocab_size=500)
    model = Denoiser(model_config("tiny", tok.get_vocab_size()))
    init_weights(model, 1)
    with torch.no_grad():  # sharper logits than the init, so greedy choices are not ties
        model.lm_head.weight.mul_(30)
    args = {"objective": "ar", "mechanism": "eos", "seq_len": 128, "size": "tiny", "batch": 1}
    return export(model, tok, tmp_path_factory.mktemp("ar") / "ckpt", args, 0, 0, "x")


def test_ar_twin_cached_decoding_matches_recomputing_every_step(ar_checkpoint):
    model = load_checkpoint(ar_checkpoint)
    prefix, suffix = model.encode("def f(x):\n    return "), model.encode("\n\nprint(f(2))\n")
    got = generate(model, prefix, suffix, max_new=12)
    fp, fs, fm = (model.tokenizer.token_to_id(t)
                  for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    seq = [fp, *prefix, fs, *suffix, fm]
    want = []
    with torch.no_grad():
        for _ in range(12):
            tok = int(model.denoiser(torch.tensor([seq]), causal=True)[0, -1].argmax())
            if tok in (model.spec.eos_token_id, model.spec.pad_token_id):
                break
            want.append(tok)
            seq.append(tok)
    assert got.tokens == want
    assert got.forward_passes == len(want) + (len(want) < 12)


def test_finish_applies_the_server_cuts_per_mode():
    text = "def f(x):\n    y = x\n\n    return y\n"
    offset = text.index("\n\n") + 1
    assert finish("    y += 1\n    z = 2", "line", text, offset, "\n    return y\n") == "    y += 1"
    block = finish("    y += 1\n    z = 2\n    return y", "block", text, offset, "\n    return y\n")
    assert block == "    y += 1\n    z = 2"
    assert finish("abc", "span", text, offset, "") == "abc"


@needs_data
@pytest.mark.parametrize("kind", ["single", "multi", "random"])
def test_canonical_middles_pass_and_a_wrong_one_fails(kind):
    tasks = load_tasks(kind, limit=3)
    assert len(tasks) == 3
    for task in tasks:
        text, offset, mode = editor_view(task)
        middle = task.middle[:-1] if mode != "span" else task.middle
        assert program(task, middle) == task.prompt + task.middle + task.suffix
        assert passes(task, middle)
    assert not passes(tasks[0], "    raise ValueError('no')\n")
