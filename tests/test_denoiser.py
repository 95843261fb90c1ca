"""The native denoiser against transformers' own Qwen2/LLaMA, run without the causal mask."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from dlm_lsp.model.checkpoint import DlmSpec, load_checkpoint, save_checkpoint
from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig, KVCache, count_parameters
from dlm_lsp.model.random_checkpoint import byte_level_tokenizer

SIZES = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def _bidirectional_logits(hf_model, ids):
    full = torch.ones(ids.shape[0], 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
    with torch.no_grad():
        return hf_model(ids, attention_mask=full).logits


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_logits_match_transformers_run_non_causally(family):
    torch.manual_seed(0)
    if family == "qwen2":
        hf = Qwen2ForCausalLM(Qwen2Config(**SIZES, rope_theta=10000.0)).eval()
    else:
        hf = LlamaForCausalLM(LlamaConfig(**SIZES, rope_theta=500000.0)).eval()
    ours = Denoiser(DenoiserConfig.from_hf(hf.config.to_dict())).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, 300, (2, 37))
    ref = _bidirectional_logits(hf, ids)
    with torch.no_grad():
        out = ours(ids)
    diff = (ref - out).abs().max().item()
    print(f"{family}: max abs logit diff {diff:.3e}")
    assert diff < 1e-4
    # bidirectional: the first position sees the last token
    ids2 = ids.clone()
    ids2[:, -1] = (ids2[:, -1] + 1) % 300
    with torch.no_grad():
        assert (ours(ids2)[:, 0] - out[:, 0]).abs().max() > 1e-4


def _model():
    torch.manual_seed(0)
    cfg = DenoiserConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    return Denoiser(cfg).eval()


def test_cached_step_equals_full_forward_when_only_the_span_is_recomputed_unchanged():
    m = _model()
    ids = torch.randint(0, 100, (1, 30))
    cache = KVCache()
    with torch.no_grad():
        full = m(ids, cache=cache)
        pos = torch.arange(10, 18)
        step = m(ids[:, pos], positions=pos, cache=cache)
    assert torch.allclose(step, full[:, 10:18], atol=1e-5)


def test_cached_step_sees_new_span_tokens_and_only_approximates_stale_context():
    m = _model()
    ids = torch.randint(0, 100, (1, 30))
    cache = KVCache()
    with torch.no_grad():
        m(ids, cache=cache)
        new = ids.clone()
        new[0, 10:18] = torch.randint(0, 100, (8,))
        pos = torch.arange(10, 18)
        step = m(new[:, pos], positions=pos, cache=cache)
        exact = m(new)[:, 10:18]
    # the span's own K/V are fresh: close to the exact forward, not equal (context is stale)
    assert (step - exact).abs().max() < (m(ids)[:, 10:18] - exact).abs().max() + 1e-6


def test_logits_at_selects_rows():
    m = _model()
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        all_rows = m(ids)
        some = m(ids, logits_at=torch.tensor([3, 7]))
    assert torch.allclose(some, all_rows[:, [3, 7]], atol=1e-6)


def test_checkpoint_round_trip_in_fp16_loads_as_fp32(tmp_path):
    m = _model()
    tok = byte_level_tokenizer()
    m.cfg.vocab_size = tok.get_vocab_size()
    m = Denoiser(m.cfg)
    spec = DlmSpec(mask_token_id=tok.token_to_id("<mask>"), pad_token_id=0, eos_token_id=1)
    save_checkpoint(tmp_path, m, tok, spec)
    loaded = load_checkpoint(tmp_path)
    assert loaded.denoiser.lm_head.weight.dtype == torch.float32
    assert loaded.spec.mask_token_id == spec.mask_token_id
    assert loaded.decode(loaded.encode("déf f():\n\treturn 1")) == "déf f():\n\treturn 1"


def test_special_token_text_in_a_buffer_is_encoded_as_plain_text(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    ids = model.encode("x = '<mask>' + '<eos>'")
    assert not set(ids) & model.special_ids
    assert model.decode(ids) == "x = '<mask>' + '<eos>'"


def test_int8_quantisation_swaps_the_linear_layers_and_keeps_the_logits_close(random_checkpoint):
    fp32 = load_checkpoint(random_checkpoint)
    int8 = load_checkpoint(random_checkpoint, quantize="int8")
    linears = [m for m in int8.denoiser.modules() if isinstance(m, torch.nn.Linear)]
    quantised = [m for m in int8.denoiser.modules()
                 if "quantized" in type(m).__module__ and hasattr(m, "in_features")]
    assert not linears and len(quantised) == 7 * fp32.denoiser.cfg.num_hidden_layers + 1
    assert count_parameters(int8.denoiser) == count_parameters(fp32.denoiser)
    ids = torch.tensor([fp32.encode("def add(a, b):\n    return a + b\n")])
    with torch.inference_mode():
        p = torch.softmax(fp32.denoiser(ids), -1)
        q = torch.softmax(int8.denoiser(ids), -1)
    assert (p - q).abs().max() < 0.05
    assert not torch.equal(p, q)  # it did change the arithmetic
