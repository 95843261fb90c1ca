"""Token healing: the prefix's last token is taken back and the answer's first token must
spell it again (pipeline/healing.py), on the diffusion sampler and the AR twin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_bench import ar_checkpoint  # noqa: F401  (a tiny AR checkpoint)

from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import sample_autoregressive
from dlm_lsp.model.checkpoint import load_checkpoint, resolve_model_path
from dlm_lsp.model.random_checkpoint import make_random_checkpoint
from dlm_lsp.model.sampler import SamplerConfig, sample
from dlm_lsp.pipeline.engine import Engine
from dlm_lsp.pipeline.healing import Healing, heal, healed, unheal
from dlm_lsp.serving.fim_api import Completion


@pytest.fixture(scope="module")
def embedded():
    return load_checkpoint(resolve_model_path("embedded"))


def test_a_trailing_space_is_taken_back_and_only_tokens_after_a_space_may_start(embedded):
    healing = heal(embedded, embedded.encode("total += "))
    assert healing is not None and healing.text == " "
    assert set(embedded.encode(" v")) <= set(healing.first_tokens)
    assert all(embedded.token_texts[i].startswith(" ") for i in healing.first_tokens)


def test_a_piece_of_a_word_heals_to_the_words_it_begins(embedded):
    ids = embedded.encode("x = ret")
    healing = heal(embedded, ids)
    assert healing is not None and healing.text == embedded.token_texts[ids[-1]]
    assert embedded.encode(" return")[0] in healing.first_tokens
    assert healing.token == ids[-1] and healing.token in healing.first_tokens


def test_a_line_break_is_never_taken_back(embedded):
    assert heal(embedded, embedded.encode("x = 1\n")) is None
    assert heal(embedded, []) is None


def test_the_taken_back_text_is_cut_from_the_answer():
    healing = Healing(" ", (1, 2))
    assert unheal(" v", healing) == "v" and unheal("v", healing) == "v"
    assert unheal(" v", None) == " v"


def test_published_recipes_and_chat_prompts_keep_their_prompt(embedded):
    ids = embedded.encode("total += ")
    pieces, cfg, healing = healed(embedded, ids, [4, []], SamplerConfig(schedule="linear"))
    assert healing is None and pieces[0] == ids and not cfg.first_tokens
    pieces, cfg, healing = healed(embedded, ids, [4, []], SamplerConfig())
    assert healing is not None and pieces[0] == ids[:-1] and cfg.first_tokens


def _other_token(first: int) -> int:
    return 7 if first != 7 else 8


def test_the_diffusion_sampler_commits_only_an_allowed_first_token(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    torch.manual_seed(0)
    pieces = [model.encode("def f(x):\n    return"), 4, model.encode("\n")]
    free = sample(model.denoiser, model.spec, pieces, SamplerConfig()).candidates[0].spans[0]
    forced = _other_token(free[0])
    got = sample(model.denoiser, model.spec, pieces,
                 SamplerConfig(first_tokens=(forced,))).candidates[0].spans[0]
    assert got[0] == forced


def test_the_ar_twin_commits_only_an_allowed_first_token(ar_checkpoint):  # noqa: F811
    model = load_checkpoint(ar_checkpoint)
    pieces = [model.encode("def f(x):\n    return"), 4, model.encode("\n")]
    free = sample_autoregressive(model, pieces, SamplerConfig()).candidates[0].spans[0]
    forced = _other_token(free[0])
    got = sample_autoregressive(model, pieces, SamplerConfig(first_tokens=(forced,)))
    assert got.candidates[0].spans[0][0] == forced


def test_a_completion_after_a_space_does_not_start_with_another_space():
    engine = Engine(Settings(model="embedded", threads=1))
    text = "def count(words):\n    n = 0\n    for w in words:\n        n += \n    return n\n"
    offset = text.index("n += ") + len("n += ")
    outcome = engine.complete(text, offset, "python")
    assert outcome.candidates and not outcome.candidates[0].text[:1].isspace()


@pytest.fixture(scope="module")
def bpe_parrot(tmp_path_factory) -> Path:
    """Writes '1' in every slot, with a tokenizer that has merges (so prompts can heal)."""
    texts = ["import os\nimport json\nprint(os.path, json.loads)\n"] * 20
    return make_random_checkpoint(tmp_path_factory.mktemp("bpe") / "ckpt", vocab_size=300,
                                  texts=texts, parrot="1")


def test_the_http_server_heals_each_request_of_a_batch(bpe_parrot):
    from dlm_lsp.serving.fim_api import FimParams
    from dlm_lsp.serving.serve_http import LocalFimService

    service = LocalFimService(Settings(model=str(bpe_parrot), threads=1), "parrot")
    model = service.engine.load()
    healing = heal(model, model.encode("import o"))
    assert healing is not None and model.encode("1")[0] not in healing.first_tokens
    answers = service.decode([FimParams("import o", "\n", 4, 0.0),
                              FimParams("x = 1\n", "\n", 4, 0.0)])
    assert all(isinstance(a, Completion) for a in answers)
    healed_answer, plain = (a.text for a in answers)  # type: ignore[union-attr]
    # the first slot spelt the taken-back "o" again (the parrot's 1 was not allowed there),
    # and it was cut from the answer; unhealed, the parrot writes 1 in all four slots
    assert (healed_answer, plain) == ("111", "1111")
