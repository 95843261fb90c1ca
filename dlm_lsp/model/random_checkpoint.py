"""Random-weight checkpoints for tests, timing and `doctor`: nothing is downloaded.

The tokenizer is byte-level BPE (optionally with merges learnt from a few local texts), with
the special tokens a diffusion checkpoint needs. ``parrot`` makes the model predict one fixed
string's first token everywhere with near-certainty, which gives tests a model whose output
is known without training.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dlm_lsp.model.checkpoint import DlmSpec, save_checkpoint
from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig

SPECIAL_TOKENS = ["<pad>", "<eos>", "<mask>", "<expand>"]


def byte_level_tokenizer(vocab_size: int = 0, texts: Iterable[str] = ()) -> Tokenizer:
    """Byte-level BPE: 256 byte symbols, merges learnt from `texts` up to `vocab_size`."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if vocab_size > 256 + len(SPECIAL_TOKENS):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
    else:
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
        tok.pre_tokenizer = pre
        tok.add_special_tokens(SPECIAL_TOKENS)
    tok.decoder = decoders.ByteLevel()
    return tok


def make_random_checkpoint(
    path: Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    vocab_size: int = 0,
    texts: Iterable[str] = (),
    expand: bool = False,
    parrot: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight checkpoint directory at `path` and return it."""
    tok = byte_level_tokenizer(vocab_size, texts)
    cfg = DenoiserConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 8 // 3,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Denoiser(cfg)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    if parrot is not None:
        _make_parrot(model, tok.encode(parrot, add_special_tokens=False).ids[0])
    spec = DlmSpec(
        mask_token_id=tok.token_to_id("<mask>"),
        pad_token_id=tok.token_to_id("<pad>"),
        eos_token_id=tok.token_to_id("<eos>"),
        expand_token_id=tok.token_to_id("<expand>") if expand else None,
        max_context=2048,
        training={"random_weights": True, "seed": seed},
    )
    save_checkpoint(path, model, tok, spec, dtype=torch.float32)
    return path


@torch.no_grad()
def _make_parrot(model: Denoiser, token_id: int) -> None:
    """Route a constant residual feature (dim 0) straight to `token_id`'s logit."""
    model.model.embed_tokens.weight[:, 0] = 100.0
    for block in model.model.layers:  # nothing else writes to dim 0 of the residual stream
        block.self_attn.o_proj.weight[0, :] = 0.0
        block.mlp.down_proj.weight[0, :] = 0.0
    model.lm_head.weight[token_id, 0] = 20.0


def stdlib_texts(limit_bytes: int = 4_000_000) -> list[str]:
    """Python standard-library sources, to learn BPE merges for a realistic vocabulary."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out.append(text)
        total += len(text)
        if total >= limit_bytes:
            break
    return out


# -- published families' layouts (families.py), tiny and random ------------------------------
QWEN_SPECIAL = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>",
                151659: "<|fim_prefix|>", 151660: "<|fim_middle|>", 151661: "<|fim_suffix|>"}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# per family: config.json keys (the family's own spelling), vocabulary, added tokens, files
FAMILY_LAYOUTS: dict[str, dict] = {
    "dream": {"vocab": 152064, "tokens": {**QWEN_SPECIAL, 151665: "<|beginoftext|>",
                                          151666: "<|mask|>"},
              "config": {"architectures": ["DreamModel"], "model_type": "Dream",
                         "auto_map": {"AutoModel": "modeling_dream.DreamModel"},
                         "mask_token_id": 151666, "pad_token_id": 151643,
                         "eos_token_id": 151643, "bos_token_id": 151643,
                         "rope_theta": 1000000.0, "max_position_embeddings": 131072},
              "bos_token": "<|beginoftext|>", "slow_tokenizer": True, "chat": True},
    "dreamon": {"vocab": 152064, "tokens": {**QWEN_SPECIAL, 151665: "<|beginoftext|>",
                                            151666: "<|mask|>", 151667: "<|expand|>"},
                "config": {"architectures": ["DreamModel"], "model_type": "Dream",
                           "mask_token_id": 151666, "pad_token_id": 151643,
                           "eos_token_id": 151643, "rope_theta": 1000000.0},
                "bos_token": "<|beginoftext|>", "slow_tokenizer": True},
    "open-dcoder": {"vocab": 151936, "tokens": {**QWEN_SPECIAL, 151665: "[MASK]"},
                    "config": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                               "eos_token_id": 151643, "tie_word_embeddings": True,
                               "rope_theta": 1000000.0},
                    "mask_token": "[MASK]"},
    "fast-dllm-v2": {"vocab": 151936, "tokens": {**QWEN_SPECIAL, 151665: "|<MASK>|"},
                     "config": {"architectures": ["Fast_dLLM_QwenForCausalLM"],
                                "model_type": "Fast_dLLM_Qwen", "bd_size": 32,
                                "eos_token_id": 151645, "bos_token_id": 151643,
                                "rope_theta": 1000000.0},
                     "chat": True},
    "llada": {"vocab": 126464, "tokens": {126080: "<|startoftext|>", 126081: "<|endoftext|>",
                                          126336: "<|mdm_mask|>", 126346: "<|start_header_id|>",
                                          126347: "<|end_header_id|>", 126348: "<|eot_id|>"},
              "config": {"architectures": ["LLaDAModelLM"], "model_type": "llada",
                         "block_type": "llama", "activation_type": "silu", "mlp_ratio": 4,
                         "include_bias": False, "include_qkv_bias": False,
                         "weight_tying": False, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
                         "max_sequence_length": 4096, "mask_token_id": 126336,
                         "eos_token_id": 126081, "pad_token_id": 126081},
              "bos_token": "<|startoftext|>", "chat": True},
}


def make_family_checkpoint(path: Path, family: str, *, hidden_size: int = 32,
                           num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                           intermediate_size: int = 64, seed: int = 0,
                           dtype: torch.dtype = torch.bfloat16) -> Path:
    """A random-weight checkpoint laid out as `family` publishes its own: its config keys,
    weight names, special token ids and tokenizer files (no dlm.json)."""
    import json

    from safetensors.torch import save_file

    lay = FAMILY_LAYOUTS[family]
    vocab_size, tokens = lay["vocab"], lay["tokens"]
    path.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    first_special = min(tokens)
    vocab.update({f"<unused_{i}>": i for i in range(len(vocab), first_special)})
    added = {str(i): {"content": t, "special": True} for i, t in sorted(tokens.items())}
    tok_cfg = {"added_tokens_decoder": added, "eos_token": tokens.get(
        lay["config"]["eos_token_id"]), "tokenizer_class": "PreTrainedTokenizerFast"}
    if "mask_token" in lay:
        tok_cfg["mask_token"] = lay["mask_token"]
    if "bos_token" in lay:
        tok_cfg["bos_token"] = lay["bos_token"]
    if lay.get("chat"):
        tok_cfg["chat_template"] = CHATML
    if lay.get("slow_tokenizer"):  # vocab.json + merges.txt, as Qwen2's slow tokenizer
        (path / "vocab.json").write_text(json.dumps(vocab))
        (path / "merges.txt").write_text("#version: 0.2\n")
    else:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        for i, t in sorted(tokens.items()):
            assert tok.get_vocab_size() <= i
            while tok.get_vocab_size() < i:  # ids between specials, as in the real vocabularies
                tok.add_tokens([f"<reserved_{tok.get_vocab_size()}>"])
            tok.add_special_tokens([t])
        tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))

    cfg = dict(lay["config"])
    torch.manual_seed(seed)
    if family == "llada":
        cfg.update(d_model=hidden_size, n_heads=num_heads, n_kv_heads=num_kv_heads,
                   n_layers=num_layers, mlp_hidden_size=intermediate_size,
                   vocab_size=vocab_size, embedding_size=vocab_size)
    else:
        cfg.update(hidden_size=hidden_size, num_attention_heads=num_heads,
                   num_key_value_heads=num_kv_heads, num_hidden_layers=num_layers,
                   intermediate_size=intermediate_size, vocab_size=vocab_size,
                   rms_norm_eps=cfg.get("rms_norm_eps", 1e-6), hidden_act="silu")
        cfg.setdefault("tie_word_embeddings", False)
        cfg.setdefault("max_position_embeddings", 32768)
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    weights = _family_weights(family, cfg, hidden_size, num_layers, num_heads, num_kv_heads,
                              intermediate_size, vocab_size)
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _family_weights(family: str, cfg: dict, d: int, n_layers: int, n_heads: int,
                    n_kv: int, inter: int, vocab: int) -> dict[str, torch.Tensor]:
    hd = d // n_heads

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape) * 0.2

    def norm() -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(d)

    out: dict[str, torch.Tensor] = {}
    if family == "llada":  # modeling_llada.py names
        out["model.transformer.wte.weight"] = w(vocab, d)
        out["model.transformer.ln_f.weight"] = norm()
        out["model.transformer.ff_out.weight"] = w(vocab, d)
        for i in range(n_layers):
            p = f"model.transformer.blocks.{i}."
            out |= {p + "attn_norm.weight": norm(), p + "ff_norm.weight": norm(),
                    p + "q_proj.weight": w(n_heads * hd, d), p + "k_proj.weight": w(n_kv * hd, d),
                    p + "v_proj.weight": w(n_kv * hd, d), p + "attn_out.weight": w(d, d),
                    p + "ff_proj.weight": w(inter, d), p + "up_proj.weight": w(inter, d),
                    p + "ff_out.weight": w(d, inter)}
        return out
    out["model.embed_tokens.weight"] = w(vocab, d)
    out["model.norm.weight"] = norm()
    if not cfg.get("tie_word_embeddings"):
        out["lm_head.weight"] = w(vocab, d)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out |= {p + "input_layernorm.weight": norm(),
                p + "post_attention_layernorm.weight": norm(),
                p + "self_attn.q_proj.weight": w(n_heads * hd, d),
                p + "self_attn.q_proj.bias": w(n_heads * hd),
                p + "self_attn.k_proj.weight": w(n_kv * hd, d),
                p + "self_attn.k_proj.bias": w(n_kv * hd),
                p + "self_attn.v_proj.weight": w(n_kv * hd, d),
                p + "self_attn.v_proj.bias": w(n_kv * hd),
                p + "self_attn.o_proj.weight": w(d, d),
                p + "mlp.gate_proj.weight": w(inter, d), p + "mlp.up_proj.weight": w(inter, d),
                p + "mlp.down_proj.weight": w(d, inter)}
    return out
