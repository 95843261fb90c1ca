"""Each published family decodes as its authors' code does: the project's sampler, set to
the family's recipe, commits the same tokens at temperature 0 as a plain reference decoder
written from the family's published generation code (tests/reference_decoders.py)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from dlm_lsp.config import Settings
from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.model.random_checkpoint import make_family_checkpoint
from dlm_lsp.model.sampler import SamplerConfig, sample
from dlm_lsp.pipeline.chat import chat_ids
from dlm_lsp.pipeline.engine import Engine, frame

import reference_decoders as ref

FAMILIES = ["dream", "dreamon", "llada", "open-dcoder", "fast-dllm-v2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    out = {}
    for name in FAMILIES:
        path = make_family_checkpoint(tmp_path_factory.mktemp(name) / "ckpt", name,
                                      hidden_size=32, num_layers=2, seed=3,
                                      dtype=torch.float32)
        out[name] = load_checkpoint(path, "cpu", "none", "float32")
    return out


def recipe_config(model, **extra) -> SamplerConfig:
    engine = Engine(Settings(model=str(model.path), temperature=0.0, quantize="none"))
    engine._model = model
    cfg = engine.sampler_config(model)
    return dataclasses.replace(cfg, temperature=0.0, top_p=1.0, **extra)


def ours(model, pieces: list, cfg: SamplerConfig) -> list[int]:
    return sample(model.denoiser, model.spec, frame(model.spec, pieces), cfg).candidates[0].spans[0]


def until_end(model, tokens: list[int]) -> list[int]:
    """The family's output as the project keeps it: up to the first end token, without
    mask / expand / delete tokens."""
    spec = model.spec
    ends = ({spec.eos_token_id, spec.pad_token_id} | set(spec.end_token_ids)
            if spec.delete_token_id is None else set(spec.end_token_ids))
    drop = {spec.mask_token_id, spec.expand_token_id, spec.delete_token_id}
    out = []
    for t in tokens:
        if t in ends:
            break
        if t not in drop:
            out.append(t)
    return out


def _cases(model, count: int = 6, seed: int = 0) -> list[tuple[list[int], int, list[int]]]:
    rng = random.Random(seed)
    ids = model.encode("def area(r):\n    return 3.14 * r * r\n\nprint(area(2))\n")
    return [(ids[: rng.randint(3, 12)], rng.choice([5, 8, 12]), ids[rng.randint(12, 20):])
            for _ in range(count)]


@pytest.mark.parametrize("name,reference", [
    ("dream", ref.dream), ("llada", ref.llada), ("open-dcoder", ref.open_dcoder_p2),
    ("dreamon", ref.dreamon)])
def test_the_sampler_with_the_family_recipe_decodes_as_the_published_code(
        models, name, reference):
    model = models[name]
    cfg = recipe_config(model)
    assert cfg.schedule != "threshold" and not cfg.use_cache and cfg.window == 0
    for prefix, n, suffix in _cases(model):
        expected = until_end(model, reference(model, prefix, n, suffix))
        assert ours(model, [prefix, n, suffix], cfg) == expected, (prefix, n, suffix)


def test_llada_blocks_are_decoded_in_order_across_two_blocks(models):
    model = models["llada"]
    cfg = recipe_config(model)
    prefix = model.encode("x = 1\n")
    expected = until_end(model, ref.llada(model, prefix, 40, []))
    assert ours(model, [prefix, 40], cfg) == expected


def test_fast_dllm_v2_decodes_block_by_block_after_a_chat_prompt(models):
    model = models["fast-dllm-v2"]
    cfg = recipe_config(model)
    assert cfg.block_aligned and cfg.ar_block_starts and cfg.stop_at_end
    for user in ("add two numbers", "sort a list of words by length"):
        prompt = chat_ids(model, user)
        n = 64 - len(prompt) % 32  # the rest of the prompt's block and one block more
        expected = until_end(model, ref.fast_dllm_v2(model, prompt, n))
        assert ours(model, [prompt, n], cfg) == expected


def test_a_shifted_model_reads_row_zero_for_a_span_at_the_start_of_the_file(models):
    # nothing before the span: Dream takes position 0's own logits, never the last row's
    model = models["dream"]
    cfg = recipe_config(model)
    suffix = model.encode("\nprint(1)\n")
    assert ours(model, [[], 6, suffix], cfg) == until_end(model, ref.dream(model, [], 6, suffix))
    # the fast path reads row 0 too, and its cached steps leave the last position's K/V
    # alone (row -1 once made them recompute it at RoPE position -1)
    from dlm_lsp.model.denoiser import KVCache
    from dlm_lsp.model.sampler import _forward

    x = torch.tensor([[model.spec.mask_token_id] * 3 + suffix])
    slots = torch.arange(3)
    cfg_fast = SamplerConfig()
    full, cache = _forward(model.denoiser, x, slots, slots, None, True, cfg_fast, model.spec,
                           None)
    rows = model.denoiser(x)
    torch.testing.assert_close(full[0], rows[0, [0, 0, 1]])
    last_k = cache.keys[0][:, :, -1].clone()
    assert isinstance(cache, KVCache)
    _forward(model.denoiser, x, slots, slots, cache, False, cfg_fast, model.spec, None)
    torch.testing.assert_close(cache.keys[0][:, :, -1], last_k)


def test_dreamon_deletes_an_eos_slot_at_once_and_frames_its_prompt(models):
    model = models["dreamon"]
    spec = model.spec
    assert frame(spec, [[5], 3, [6]]) == [[spec.bos_token_id], [5], 3, [6], [spec.eos_token_id]]
    # a model that writes eos first: the span shrinks instead of holding "code <eos> code"
    from dlm_lsp.model.sampler import _resize

    x = torch.tensor([[9, spec.eos_token_id, spec.mask_token_id, 7]])
    span_of = torch.tensor([-1, 0, 0, -1])
    masked = torch.tensor([[True, True]])
    conf = torch.zeros(x.shape)
    new_x, _, _, new_span, resized = _resize(x, conf, torch.zeros_like(x, dtype=torch.bool),
                                             span_of, spec, SamplerConfig(), masked)
    assert resized and spec.eos_token_id not in new_x[0].tolist()
    assert new_x[0].tolist() == [9, spec.mask_token_id, 7] and new_span.tolist() == [-1, 0, -1]


# -- what a checkpoint says about itself -----------------------------------------------------
def _edit_json(path: Path, name: str, **changes) -> None:
    import json

    f = path / name
    data = json.loads(f.read_text()) if f.exists() else {}
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    f.write_text(json.dumps(data))


def test_ids_come_from_the_checkpoint_before_the_table_with_their_sources(tmp_path):
    path = make_family_checkpoint(tmp_path / "c", "dream", dtype=torch.float32)
    _edit_json(path, "config.json", mask_token_id=151665)  # the checkpoint names another id
    model = load_checkpoint(path, "cpu", "none", "float32")
    assert model.spec.mask_token_id == 151665
    assert model.spec.sources["mask_token_id"] == "config.json"
    _edit_json(path, "config.json", mask_token_id=None)
    model = load_checkpoint(path, "cpu", "none", "float32")
    assert model.spec.mask_token_id == 151666
    assert model.spec.sources["mask_token_id"] == "adapter table"


def test_dreamon_is_recognised_from_its_tokenizer_json_alone(tmp_path):
    path = make_family_checkpoint(tmp_path / "c", "dreamon", dtype=torch.float32)
    tok_cfg = (path / "tokenizer_config.json")
    import json

    cfg = json.loads(tok_cfg.read_text())
    # the expand token only in the tokenizer files, not in tokenizer_config's added tokens
    cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items()
                                   if v["content"] != "<|expand|>"}
    tok_cfg.write_text(json.dumps(cfg))
    from dlm_lsp.model.families import load_tokenizer

    tok = load_tokenizer(path, json.loads(tok_cfg.read_text()))
    tok.add_special_tokens(["<|expand|>"])
    tok.save(str(path / "tokenizer.json"))
    model = load_checkpoint(path, "cpu", "none", "float32")
    assert model.family == "dreamon" and model.spec.expand_token_id is not None


def test_an_unknown_or_incomplete_layout_is_refused_and_the_family_setting_overrides(tmp_path):
    from dlm_lsp.model.checkpoint import ModelError

    path = make_family_checkpoint(tmp_path / "c", "open-dcoder", dtype=torch.float32)
    _edit_json(path, "tokenizer_config.json", mask_token=None)
    with pytest.raises(ModelError, match="no mask token in its tokenizer config"):
        load_checkpoint(path, "cpu", "none", "float32")
    with pytest.raises(ModelError, match="no mask token"):  # told the family, still no mask id
        load_checkpoint(path, "cpu", "none", "float32", family_setting="dream")
    model = load_checkpoint(path, "cpu", "none", "float32", family_setting="open-dcoder")
    assert model.family == "open-dcoder" and model.spec.mask_token_id == 151665
    with pytest.raises(ModelError, match='family "mystery" is not one of'):
        load_checkpoint(path, "cpu", "none", "float32", family_setting="mystery")


def test_instruct_checkpoints_get_a_chat_prompt_and_stop_at_their_end_of_turn(tmp_path):
    path = make_family_checkpoint(tmp_path / "DiffuCoder-7B-Instruct", "dream",
                                  dtype=torch.float32)
    model = load_checkpoint(path, "cpu", "none", "float32")
    im_end = model.tokenizer.token_to_id("<|im_end|>")
    assert model.spec.prompt_format == "chat" and im_end in model.spec.end_token_ids
    spec = model.spec
    x = torch.tensor([[5, 6, 7, im_end, 9]])
    from dlm_lsp.model.sampler import _collect

    span_of = torch.tensor([-1, 0, 0, 0, 0])
    assert _collect(x, torch.zeros(x.shape), span_of, spec)[0].spans == [[6, 7]]
    engine = Engine(Settings(model=str(path), quantize="none", max_tokens=4, max_steps=4))
    result, _ = engine.run([model.encode("def f():\n    return "), 4, model.encode("\n")])
    assert len(result.candidates[0].spans) == 1
    base = load_checkpoint(path, "cpu", "none", "float32", prompt_format="raw")
    assert base.spec.prompt_format == "raw" and base.spec.end_token_ids == []


def test_rope_scaling_that_is_not_applied_is_reported_and_llada_rotates_in_fp32(tmp_path):
    path = make_family_checkpoint(tmp_path / "c", "dream", dtype=torch.float32)
    _edit_json(path, "config.json", rope_scaling={"rope_type": "yarn", "factor": 4.0})
    model = load_checkpoint(path, "cpu", "none", "float32")
    assert any("yarn" in w for w in model.warnings)
    llada = load_checkpoint(make_family_checkpoint(tmp_path / "l", "llada"), "cpu", "none",
                            "bfloat16")
    assert llada.denoiser.cfg.rope_fp32
    cos, _ = llada.denoiser._rope(torch.arange(4))
    assert cos.dtype == torch.float32
    assert frame(llada.spec, [[5], 2]) == [[llada.spec.bos_token_id], [5], 2]


def test_doctor_reports_the_family_its_ids_with_sources_and_the_recipe(models, capsys):
    from dlm_lsp.doctor import report_decoding

    engine = Engine(Settings(model=str(models["llada"].path)))
    report_decoding(models["llada"], engine)
    out = capsys.readouterr().out
    assert "family                 llada" in out
    assert "mask_token_id        126336 '<|mdm_mask|>' (from config.json)" in out
    assert "prompt format        bos" in out and "logits shift         no" in out
    assert "published recipe: one schedule, confidence order" in out and "blocks of 32" in out
    assert "LLaDA generate.py" in out
    fast = Engine(Settings(model=str(models["llada"].path), decoding="fast"))
    report_decoding(models["llada"], fast)
    assert "editor fast path (decoding is \"fast\")" in capsys.readouterr().out
