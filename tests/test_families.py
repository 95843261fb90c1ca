"""Published diffusion families through their adapters, on tiny random checkpoints laid out
as each family publishes its own (config keys, weight names, special ids, tokenizer files)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from dlm_lsp.model.checkpoint import ModelError, check_fits, load_checkpoint
from dlm_lsp.model.families import FAMILIES, byte_level_bpe, markdown_table
from dlm_lsp.model.random_checkpoint import make_family_checkpoint

# family -> (mask, eos, pad, shift, expand, delete, block size, mask token text)
FACTS = {
    "dream": (151666, 151643, 151643, True, None, None, 0, "<|mask|>"),
    "dreamon": (151666, 151643, 151643, True, 151667, 151643, 0, "<|mask|>"),
    "open-dcoder": (151665, 151643, 151643, True, None, None, 0, "[MASK]"),
    "fast-dllm-v2": (151665, 151645, 151643, True, None, None, 32, "|<MASK>|"),
    "llada": (126336, 126081, 126081, False, None, None, 0, "<|mdm_mask|>"),
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: make_family_checkpoint(root / name, name) for name in FACTS}


def load(path, **kw):
    return load_checkpoint(path, device="cpu", quantize="none", dtype="float32", **kw)


PROMPTS = {"dream": "raw", "dreamon": "bos_eos", "open-dcoder": "raw", "llada": "bos",
           "fast-dllm-v2": "chat"}


def test_the_adapter_table_covers_the_families_with_sources():
    assert {f.name for f in FAMILIES} == set(FACTS)
    assert all(f.sources and all("http" in s for s in f.sources) for f in FAMILIES)
    table = markdown_table()
    assert all(f"| {name} |" in table for name in FACTS)


@pytest.mark.parametrize("name", list(FACTS))
def test_each_family_loads_without_dlm_json_with_its_published_special_tokens(
        family_dirs, name):
    path = family_dirs[name]
    assert not (path / "dlm.json").exists()
    model = load(path)
    mask, eos, pad, shift, expand, delete, block, mask_text = FACTS[name]
    s = model.spec
    assert model.family == name
    assert (s.mask_token_id, s.eos_token_id, s.pad_token_id) == (mask, eos, pad)
    assert (s.logits_shift, s.expand_token_id, s.delete_token_id, s.block_size) == (
        shift, expand, delete, block)
    assert model.tokenizer.token_to_id(mask_text) == mask
    assert model.decode(model.encode("def f(x):\n    return x")) == "def f(x):\n    return x"
    # the mask token's spelling typed in a buffer is text, not the mask
    assert mask not in model.encode(f"a {mask_text} b")
    assert s.prompt_format == PROMPTS[name]


def _hf_qwen2(path, config):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hf = Qwen2Config(**{k: config[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta",
        "max_position_embeddings", "tie_word_embeddings")})
    model = Qwen2ForCausalLM(hf).eval()
    weights = {k: v.float() for k, v in load_file(path / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model


def _ids(n=70, seed=1):
    return torch.randint(0, 5000, (1, n), generator=torch.Generator().manual_seed(seed))


def test_qwen2_slow_tokenizer_files_tokenize_as_transformers_qwen2_tokenizer(tmp_path):
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = [("d", "e"), ("de", "f"), ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("r", "e"), ("re", "t")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    ours = byte_level_bpe(tmp_path / "vocab.json", tmp_path / "merges.txt")
    ref = Qwen2Tokenizer(vocab=vocab, merges=merges)
    for text in ["def f(x):\n    return x  # héllo", "a's  b\r\n\n\tc 123 😀 ret"]:
        ids = ours.encode(text).ids
        assert ids == ref(text)["input_ids"]
        assert ours.decode(ids) == text



@pytest.mark.parametrize("name", ["dream", "dreamon", "open-dcoder", "fast-dllm-v2"])
def test_native_forward_matches_transformers_qwen2_on_the_same_weights(family_dirs, name):
    path = family_dirs[name]
    model = load(path)
    config = json.loads((path / "config.json").read_text())
    ids = _ids()
    T = ids.shape[1]
    if model.spec.block_size:  # block-causal: own block and earlier ones
        blk = torch.arange(T) // model.spec.block_size
        mask = (blk[None, :] <= blk[:, None])[None, None]
    else:  # bidirectional
        mask = torch.ones(1, 1, T, T, dtype=torch.bool)
    with torch.no_grad():
        ours = model.denoiser(ids)
        theirs = _hf_qwen2(path, config)(ids, attention_mask=mask).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-4)


def _llada_reference(w, cfg, ids):
    """LLaDA's LLaMA block written from modeling_llada.py's own names (attn_norm, q/k/v_proj,
    attn_out, ff_norm, ff_proj = the SiLU-gated branch, up_proj, ff_out), bidirectional."""
    d, nh, nkv = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    hd, eps, T = d // nh, cfg["rms_norm_eps"], ids.shape[1]

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = w["model.transformer.wte.weight"][ids]
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = (h @ w[p + "q_proj.weight"].T).view(1, T, nh, hd).transpose(1, 2)
        k = (h @ w[p + "k_proj.weight"].T).view(1, T, nkv, hd).transpose(1, 2)
        v = (h @ w[p + "v_proj.weight"].T).view(1, T, nkv, hd).transpose(1, 2)
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        att = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / hd**0.5, -1) @ v
        x = x + att.transpose(1, 2).reshape(1, T, d) @ w[p + "attn_out.weight"].T
        h = rms(x, w[p + "ff_norm.weight"])
        gate, up = h @ w[p + "ff_proj.weight"].T, h @ w[p + "up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "ff_out.weight"].T
    return rms(x, w["model.transformer.ln_f.weight"]) @ w["model.transformer.ff_out.weight"].T


def test_llada_native_forward_matches_its_own_block_structure_and_transformers_llama(
        family_dirs):
    from transformers import LlamaConfig, LlamaForCausalLM

    from dlm_lsp.model.families import by_name, rename_weights

    path = family_dirs["llada"]
    cfg = json.loads((path / "config.json").read_text())
    raw = {k: v.float() for k, v in load_file(path / "model.safetensors").items()}
    model = load(path)
    ids = _ids(40)
    with torch.no_grad():
        ours = model.denoiser(ids)
        reference = _llada_reference(raw, cfg, ids)
        llama = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["d_model"],
            intermediate_size=cfg["mlp_hidden_size"], num_hidden_layers=cfg["n_layers"],
            num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
            rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"])).eval()
        llama.load_state_dict(rename_weights(by_name("llada"), dict(raw)), strict=True)
        full = torch.ones(1, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
        theirs = llama(ids, attention_mask=full).logits
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-4)


def test_block_diffusion_sees_its_own_block_both_ways_and_no_later_block(family_dirs):
    model = load(family_dirs["fast-dllm-v2"])
    ids = _ids(96)
    changed = ids.clone()
    changed[0, 50] += 1  # inside the second 32-token block
    with torch.no_grad():
        a, b = model.denoiser(ids), model.denoiser(changed)
    diff = (a - b).abs().amax(-1)[0]
    assert diff[:32].max() == 0  # the first block never sees it
    assert diff[32:50].min() > 0  # earlier positions of its own block do
    assert diff[64:].min() > 0  # later blocks do


def test_block_diffusion_cached_steps_see_what_a_full_forward_sees(family_dirs):
    from dlm_lsp.model.denoiser import KVCache

    net = load(family_dirs["fast-dllm-v2"]).denoiser
    ids = _ids(80)
    cache = KVCache()
    with torch.no_grad():
        full = net(ids, cache=cache)
        span = torch.arange(70, 80)
        step = net(ids[:, span], positions=span, cache=cache)
    torch.testing.assert_close(step, full[:, span], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["dream", "llada", "fast-dllm-v2", "dreamon"])
def test_each_family_completes_through_the_engine(family_dirs, name):
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    engine = Engine(Settings(model=str(family_dirs[name]), device="cpu", quantize="none",
                             max_tokens=6, max_block_tokens=8, max_steps=6))
    result, stats = engine.run([engine.load().encode("def add(a, b):\n    return "), 6,
                                engine.load().encode("\n\nprint(add(1, 2))\n")])
    assert stats.forward_passes >= 1
    assert len(result.candidates[0].spans) == 1
    assert len(result.candidates[0].spans[0]) <= 6


def test_a_checkpoint_in_bf16_loads_in_the_asked_dtype(family_dirs):
    model = load_checkpoint(family_dirs["dream"], device="cpu", quantize="none",
                            dtype="bfloat16")
    assert model.denoiser.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.denoiser(_ids(8)).dtype == torch.float32  # logits are upcast


def test_a_model_too_big_for_the_device_is_refused_with_sizes_in_the_message():
    with pytest.raises(ModelError, match=r"13\.0 GiB .* 8\.0 GiB free"):
        check_fits(7_000_000_000, torch.bfloat16, torch.device("cuda"), free=8 * 2**30)
    check_fits(7_000_000_000, torch.bfloat16, torch.device("cuda"), free=20 * 2**30)
    check_fits(7_000_000_000, torch.float32, torch.device("cpu"), free=None)  # unknown: try


def test_an_unknown_checkpoint_without_dlm_json_names_the_known_families(tmp_path,
                                                                          family_dirs):
    import shutil

    plain = tmp_path / "plain-qwen2"
    shutil.copytree(family_dirs["open-dcoder"], plain)
    tok_cfg = json.loads((plain / "tokenizer_config.json").read_text())
    tok_cfg.pop("mask_token")  # an autoregressive Qwen2: no mask token
    (plain / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    cfg = json.loads((plain / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_x.X"}
    (plain / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="not a known diffusion family .*dream.*own model code"):
        load(plain)


def test_instant_edit_gives_an_instruct_checkpoint_its_chat_template(family_dirs):
    from dlm_lsp.pipeline.chat import chat_ids, unfence

    model = load(family_dirs["dream"])
    ids = chat_ids(model, "rename x to y; not <|im_end|> markup")
    im_start, im_end = 151644, 151645
    assert ids[0] == im_start and ids.count(im_end) == 1  # only the template's markup
    assert model.decode(ids).endswith("assistant\n")
    assert unfence("```python\nreturn y\n```") == "return y"
    assert unfence("return y") == "return y"


def test_the_gpu_family_benchmark_loads_and_times_each_family_at_a_tiny_shape(tmp_path):
    from bench.families_gpu import main

    out = tmp_path / "families.json"
    main(["--device", "cpu", "--tiny", "--families", "llada", "fast-dllm-v2", "--out", str(out)])
    rows = json.loads(out.read_text())["families"]
    assert [r["family"] for r in rows] == ["llada", "fast-dllm-v2"]
    assert all(r["full_forward_ms"] > 0 and r["cached_step_ms"] > 0 and r["weights_gb"] > 0
               for r in rows)
    for r in rows:  # the published recipe and the fast path, side by side
        assert r["published_passes_mean"] >= r["fast_passes_mean"] > 0
        agree, total = map(int, r["fast_agrees_with_published"].split("/"))
        assert total == 8 and 0 <= agree <= total
