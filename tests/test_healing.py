"""Token healing: the prefix's last token is taken back and the answer's first token must
spell it again (pipeline/healing.py), on the diffusion sampler and the AR twin."""

from __future__ import annotations

import pytest
import torch
from test_bench import ar_checkpoint  # noqa: F401  (a tiny AR checkpoint)

from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import sample_autoregressive
from dlm_lsp.model.checkpoint import load_checkpoint, resolve_model_path
from dlm_lsp.model.sampler import SamplerConfig, sample
from dlm_lsp.pipeline.engine import Engine
from dlm_lsp.pipeline.healing import Healing, heal, healed, unheal


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
