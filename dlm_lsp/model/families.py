"""Adapters for published diffusion checkpoints that have no ``dlm.json``.

Each family's facts (mask token, end tokens, whether logits are shifted, the expand token,
the attention pattern, weight and config names) come from its own published config and
code, cited in ``sources``. An adapter turns such a checkpoint into what a dlm-lsp
checkpoint directory holds: a :class:`DlmSpec`, a transformers-style backbone config and
weights under the native denoiser's names, so every family runs on ``denoiser.py`` with
its K/V cache and cancellation. Nothing here runs code shipped with a checkpoint.

| family | checkpoints | mask | ends | shift | attention |
|---|---|---|---|---|---|
| dream | Dream-v0, Dream-Coder-v0, DiffuCoder | 151666 | 151643 | yes | bidirectional |
| dreamon | DreamOn-v0 (+ expand 151667, eos deletes a slot) | 151666 | none | yes | bidir. |
| open-dcoder | Open-dCoder (Qwen2.5-Coder) | tokenizer's ``[MASK]`` | eos | yes | bidir. |
| llada | LLaDA-8B Base/Instruct, LLaDA-1.5 | 126336 | 126081 | no | bidirectional |
| fast-dllm-v2 | Fast_dLLM_v2 1.5B/7B | 151665 | 151645 | yes | causal across 32-token blocks |
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer

Config = dict[str, Any]
QWEN_FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")  # Qwen2.5's sentinels


@dataclass(frozen=True)
class Family:
    """One adapter row: how to recognise a checkpoint and the facts it needs."""

    name: str
    checkpoints: str
    detect: Callable[[Config, Config], bool]  # (config.json, tokenizer_config.json)
    mask: int | str  # a fixed id, or a token whose id the tokenizer gives
    eos: int | str | None = None  # None: config.json's eos_token_id
    pad: int | None = None  # None: config.json's pad_token_id, else eos
    logits_shift: bool = False
    expand: str | None = None  # DreamOn: this token turns its slot into two masks
    eos_deletes: bool = False  # DreamOn: eos removes its slot instead of ending the span
    block_size_key: str | None = None  # block diffusion: config key of the block size
    default_block_size: int = 0
    weights: str = "qwen2"  # "qwen2": transformers names already; "llada": renamed
    transformers_class: str | None = "Qwen2ForCausalLM"  # same weights, for parity checks
    sources: tuple[str, ...] = field(default_factory=tuple)


def _archs(cfg: Config) -> str:
    return " ".join(cfg.get("architectures") or [])


def _mask_token(tok_cfg: Config) -> str | None:
    mask = tok_cfg.get("mask_token")
    return mask.get("content") if isinstance(mask, dict) else mask


def _has_token(tok_cfg: Config, text: str) -> bool:
    added = tok_cfg.get("added_tokens_decoder") or {}
    return any(v.get("content") == text for v in added.values())


FAMILIES: tuple[Family, ...] = (
    Family(
        "dreamon", "Dream-org/DreamOn-v0-7B",
        detect=lambda c, t: c.get("model_type") == "Dream" and _has_token(t, "<|expand|>"),
        mask=151666, eos=151643, pad=151643, logits_shift=True, expand="<|expand|>",
        eos_deletes=True,
        sources=("https://huggingface.co/Dream-org/DreamOn-v0-7B/blob/main/config.json",
                 "https://github.com/DreamLM/DreamOn (generation_utils.py: expand 151667, "
                 "delete = <|endoftext|> 151643)"),
    ),
    Family(
        "dream", "Dream-org/Dream-v0-{Base,Instruct}-7B, Dream-org/Dream-Coder-v0-*-7B, "
        "apple/DiffuCoder-7B-{Base,Instruct,cpGRPO}",
        detect=lambda c, t: c.get("model_type") == "Dream",
        mask=151666, eos=151643, pad=151643, logits_shift=True,
        sources=("https://huggingface.co/Dream-org/Dream-v0-Base-7B/blob/main/config.json "
                 "(mask_token_id 151666, pad/eos 151643, model_type Dream)",
                 "https://huggingface.co/Dream-org/Dream-v0-Base-7B/blob/main/"
                 "generation_utils.py (logits = cat([logits[:, :1], logits[:, :-1]]))",
                 "https://huggingface.co/apple/DiffuCoder-7B-Instruct/blob/main/config.json",
                 "https://github.com/apple/ml-diffucoder"),
    ),
    Family(
        "fast-dllm-v2", "Efficient-Large-Model/Fast_dLLM_v2_{1.5B,7B}",
        detect=lambda c, t: "Fast_dLLM_QwenForCausalLM" in _archs(c)
        or c.get("model_type") == "Fast_dLLM_Qwen",
        mask=151665, eos=151645, pad=151643, logits_shift=True, block_size_key="bd_size",
        default_block_size=32,
        sources=("https://github.com/NVlabs/Fast-dLLM/tree/main/v2 (generate: mask_id 151665, "
                 "stop_token 151645, block_size 32, logits shifted by one)",
                 "https://huggingface.co/Efficient-Large-Model/Fast_dLLM_v2_7B/blob/main/"
                 "config.json (bd_size)"),
    ),
    Family(
        "llada", "GSAI-ML/LLaDA-8B-{Base,Instruct}, GSAI-ML/LLaDA-1.5",
        detect=lambda c, t: c.get("model_type") == "llada" or "LLaDAModelLM" in _archs(c),
        mask=126336, eos=126081, pad=126081, weights="llada",
        transformers_class="LlamaForCausalLM",
        sources=("https://huggingface.co/GSAI-ML/LLaDA-8B-Base/blob/main/config.json "
                 "(mask_token_id 126336, eos/pad 126081, d_model, n_heads, ...)",
                 "https://huggingface.co/GSAI-ML/LLaDA-8B-Base/blob/main/modeling_llada.py "
                 "(model.transformer.{wte,blocks.N.*,ln_f,ff_out})",
                 "https://github.com/ML-GSAI/LLaDA/blob/main/generate.py (mask_id 126336, "
                 "logits not shifted)"),
    ),
    Family(
        "open-dcoder", "fredzzp/open-dcoder-0.5B",
        detect=lambda c, t: c.get("model_type") == "qwen2" and _mask_token(t) is not None,
        mask="[MASK]", logits_shift=True,
        sources=("https://huggingface.co/fredzzp/open-dcoder-0.5B",
                 "https://github.com/pengzhangzhi/Open-dLLM (sample.py: mask token [MASK]; "
                 "veomni/models/transformers/qwen2/generation_utils.py shifts logits)"),
    ),
)


def detect(cfg: Config, tok_cfg: Config) -> Family | None:
    """The first family whose test matches, or None."""
    return next((f for f in FAMILIES if f.detect(cfg, tok_cfg)), None)


def by_name(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def read_json(path: Path) -> Config:
    return json.loads(path.read_text()) if path.is_file() else {}


# -- tokenizer -------------------------------------------------------------------------------
# Qwen2's pre-tokenizer split, as in its tokenizer.json (and transformers' Qwen2 converter).
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
               r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def byte_level_bpe(vocab_file: Path, merges_file: Path) -> Tokenizer:
    """Qwen2's byte-level BPE from its slow files, built with `tokenizers` alone."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers

    vocab = read_json(vocab_file)
    merges = [tuple(line.split(" ", 1)) for line in merges_file.read_text("utf-8").splitlines()
              if line and not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def load_tokenizer(path: Path, tok_cfg: Config) -> Tokenizer:
    """``tokenizer.json``, or Qwen2's byte-level BPE from ``vocab.json`` + ``merges.txt``
    plus the added tokens of `tok_cfg` (``tokenizer_config.json``); never a tokenizer class
    shipped with the checkpoint."""
    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    if not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()):
        from dlm_lsp.model.checkpoint import ModelError

        raise ModelError(f"{path} has no tokenizer.json (nor vocab.json + merges.txt)")
    tok = byte_level_bpe(path / "vocab.json", path / "merges.txt")
    added = tok_cfg.get("added_tokens_decoder") or {}
    for i, entry in sorted(added.items(), key=lambda kv: int(kv[0])):
        if tok.token_to_id(entry["content"]) is None:
            gap = int(i) - tok.get_vocab_size()
            if gap > 0:  # keep later ids where the config puts them
                base = tok.get_vocab_size()
                tok.add_special_tokens([f"<|dlm_lsp_unused_{base + k}|>" for k in range(gap)])
            token = AddedToken(entry["content"], special=bool(entry.get("special", True)))
            got = tok.add_special_tokens([token]) if token.special else tok.add_tokens([token])
            if got and tok.token_to_id(entry["content"]) != int(i):
                from dlm_lsp.model.checkpoint import ModelError

                raise ModelError(f"added token {entry['content']!r} should be id {i}")
    return tok


def token_id(tok: Tokenizer, ref: int | str | None, fallback: int | None = None) -> int | None:
    if ref is None or isinstance(ref, int):
        return fallback if ref is None else ref
    return tok.token_to_id(ref)


# -- spec, config, weights -------------------------------------------------------------------
def spec_fields(fam: Family, cfg: Config, tok: Tokenizer) -> dict[str, Any]:
    """The ``dlm.json`` fields of a checkpoint of family `fam`."""
    mask = token_id(tok, fam.mask)
    if mask is None:
        from dlm_lsp.model.checkpoint import ModelError

        raise ModelError(f"{fam.name}: the tokenizer has no mask token {fam.mask!r}")
    eos = token_id(tok, fam.eos, cfg.get("eos_token_id"))
    pad = fam.pad if fam.pad is not None else cfg.get("pad_token_id", eos)
    block = int(cfg.get(fam.block_size_key, fam.default_block_size)) if fam.block_size_key else 0
    fim = [tok.token_to_id(t) for t in QWEN_FIM]
    return {
        "mask_token_id": mask, "eos_token_id": eos, "pad_token_id": pad,
        "expand_token_id": tok.token_to_id(fam.expand) if fam.expand else None,
        "delete_token_id": eos if fam.eos_deletes else None,
        "logits_shift": fam.logits_shift,
        "block_size": block,
        "fim_token_ids": fim if block and None not in fim else None,
        "max_context": int(cfg.get("max_position_embeddings")
                           or cfg.get("max_sequence_length") or 4096),
        "training": {"family": fam.name, "sources": list(fam.sources)},
    }


def backbone_config(fam: Family, cfg: Config) -> Config:
    """A transformers qwen2/llama-style config dict for ``DenoiserConfig.from_hf``."""
    if fam.weights == "llada":
        bias = bool(cfg.get("include_qkv_bias") or cfg.get("include_bias"))
        return {
            "model_type": "llama", "vocab_size": cfg.get("embedding_size") or cfg["vocab_size"],
            "hidden_size": cfg["d_model"], "intermediate_size": cfg["mlp_hidden_size"],
            "num_hidden_layers": cfg["n_layers"], "num_attention_heads": cfg["n_heads"],
            "num_key_value_heads": cfg.get("n_kv_heads") or cfg["n_heads"],
            "rms_norm_eps": cfg.get("rms_norm_eps", 1e-5),
            "rope_theta": cfg.get("rope_theta", 10000.0),
            "max_position_embeddings": cfg.get("max_sequence_length", 4096),
            "attention_bias": bias, "tie_word_embeddings": bool(cfg.get("weight_tying")),
        }
    return {**cfg, "attention_bias": cfg.get("attention_bias", True)}  # Qwen2: q/k/v biases


_LLADA_BLOCK = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
                "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
                "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
                "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"}
_LLADA_TOP = {"model.transformer.wte.weight": "model.embed_tokens.weight",
              "model.transformer.ln_f.weight": "model.norm.weight",
              "model.transformer.ff_out.weight": "lm_head.weight"}
_LLADA_RE = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)$")


def rename_weights(fam: Family, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights under the native (transformers) names."""
    if fam.weights != "llada":
        return weights
    out = {}
    for name, w in weights.items():
        if name in _LLADA_TOP:
            out[_LLADA_TOP[name]] = w
        elif (m := _LLADA_RE.match(name)) and m.group(2) in _LLADA_BLOCK:
            out[f"model.layers.{m.group(1)}.{_LLADA_BLOCK[m.group(2)]}.{m.group(3)}"] = w
        else:
            out[name] = w  # reported as unexpected by the loader
    return out


def chat_template(path: Path, tok_cfg: Config) -> str | None:
    """The checkpoint's chat template (instruct checkpoints), if it has one."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = tok_cfg.get("chat_template")
    return template if isinstance(template, str) else None


def bos_token(tok_cfg: Config) -> str:
    """The text chat templates put first (``bos_token`` of tokenizer_config.json)."""
    bos = tok_cfg.get("bos_token")
    return (bos.get("content", "") if isinstance(bos, dict) else bos) or ""


def markdown_table() -> str:
    """The adapter table with its sources, for the README and ``dlm-lsp doctor``."""
    rows = ["| family | checkpoints | mask | shift | expand | block | sources |",
            "|---|---|---|---|---|---|---|"]
    for f in FAMILIES:
        block = f"{f.block_size_key} ({f.default_block_size})" if f.block_size_key else "-"
        rows.append(f"| {f.name} | {f.checkpoints} | {f.mask} | {'yes' if f.logits_shift else 'no'}"
                    f" | {f.expand or '-'} | {block} | {'; '.join(f.sources)} |")
    return "\n".join(rows)
