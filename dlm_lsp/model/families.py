"""Adapters for published diffusion checkpoints that have no ``dlm.json``.

Each family's facts (mask token, end tokens, whether logits are shifted, the expand token,
the attention pattern, weight and config names) come from its own published config and
code, cited in ``sources``. An adapter turns such a checkpoint into what a dlm-lsp
checkpoint directory holds: a :class:`DlmSpec`, a transformers-style backbone config and
weights under the native denoiser's names, so every family runs on ``denoiser.py`` with
its K/V cache and cancellation. Nothing here runs code shipped with a checkpoint.

| family | checkpoints | mask | ends | shift | attention | prompt |
|---|---|---|---|---|---|---|
| dream | Dream-v0, Dream-Coder-v0, DiffuCoder | 151666 | 151643 | yes | bidirectional | raw |
| dreamon | DreamOn-v0 (+ expand 151667, eos deletes) | 151666 | none | yes | bidir. | bos+eos |
| open-dcoder | Open-dCoder (Qwen2.5-Coder) | tokenizer's mask | eos | yes | bidir. | raw |
| llada | LLaDA-8B Base/Instruct, LLaDA-1.5 | 126336 | 126081 | no | bidir. | bos |
| fast-dllm-v2 | Fast_dLLM_v2 1.5B/7B | 151665 | 151645 | yes | causal blocks of 32 | chat |

Ids are read from the checkpoint first (``config.json``, ``generation_config.json``, the
tokenizer's special tokens); the table's ids are only a fallback, and every value records
where it came from (``DlmSpec.sources``). Instruct and chat checkpoints (a chat template, and
"Instruct", "GRPO" or "chat" in their name) are given the chat prompt of ``pipeline/chat.py``
and stop at their end-of-turn tokens.
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

from dlm_lsp.model.errors import ModelError

Config = dict[str, Any]


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
    prompt: str = "raw"  # raw | bos | bos_eos | chat: how a span is framed for the model
    rope_fp32: bool = False  # rotary embeddings computed in fp32 whatever the weights' dtype
    sources: tuple[str, ...] = field(default_factory=tuple)


def _archs(cfg: Config) -> str:
    return " ".join(cfg.get("architectures") or [])


def _mask_token(tok_cfg: Config) -> str | None:
    mask = tok_cfg.get("mask_token")
    return mask.get("content") if isinstance(mask, dict) else mask


def _has_token(tok_cfg: Config, text: str) -> bool:
    """`text` is an added token of the tokenizer config, or of tokenizer.json itself."""
    added = tok_cfg.get("added_tokens_decoder") or {}
    return any(v.get("content") == text for v in added.values()) \
        or text in tok_cfg.get("tokenizer_added", ())


FAMILIES: tuple[Family, ...] = (
    Family(
        "dreamon", "Dream-org/DreamOn-v0-7B",
        detect=lambda c, t: c.get("model_type") == "Dream" and _is_dreamon(c, t),
        mask=151666, eos=151643, pad=151643, logits_shift=True, expand="<|expand|>",
        eos_deletes=True, prompt="bos_eos",
        sources=("https://huggingface.co/Dream-org/DreamOn-v0-7B/blob/main/config.json",
                 "https://github.com/DreamLM/DreamOn (generation_utils.py: expand 151667, "
                 "delete = <|endoftext|> 151643)",
                 "https://github.com/DreamLM/DreamOn/blob/main/eval/generator.py "
                 "([bos] + prefix + masks + suffix + [eos]; an eos deletes its slot at once)"),
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
        default_block_size=32, prompt="chat",
        sources=("https://github.com/NVlabs/Fast-dLLM/tree/main/v2 (generate: mask_id 151665, "
                 "stop_token 151645, block_size 32, logits shifted by one)",
                 "https://huggingface.co/Efficient-Large-Model/Fast_dLLM_v2_7B/blob/main/"
                 "config.json (bd_size)"),
    ),
    Family(
        "llada", "GSAI-ML/LLaDA-8B-{Base,Instruct}, GSAI-ML/LLaDA-1.5",
        detect=lambda c, t: c.get("model_type") == "llada" or "LLaDAModelLM" in _archs(c),
        mask=126336, eos=126081, pad=126081, weights="llada",
        transformers_class="LlamaForCausalLM", prompt="bos", rope_fp32=True,
        sources=("https://huggingface.co/GSAI-ML/LLaDA-8B-Base/blob/main/config.json "
                 "(mask_token_id 126336, eos/pad 126081, d_model, n_heads, ...)",
                 "https://huggingface.co/GSAI-ML/LLaDA-8B-Base/blob/main/modeling_llada.py "
                 "(model.transformer.{wte,blocks.N.*,ln_f,ff_out})",
                 "https://github.com/ML-GSAI/LLaDA/blob/main/generate.py (mask_id 126336, "
                 "logits not shifted; prompts start with <|startoftext|>)"),
    ),
    Family(
        "open-dcoder", "fredzzp/open-dcoder-0.5B",
        detect=lambda c, t: c.get("model_type") == "qwen2" and _mask_token(t) is not None,
        mask="[MASK]", logits_shift=True,  # the tokenizer config's mask token comes first
        sources=("https://huggingface.co/fredzzp/open-dcoder-0.5B",
                 "https://github.com/pengzhangzhi/Open-dLLM (sample.py adds [MASK], "
                 "tasks/train_torch.py adds <M>: the first added token, id 151665, either way; "
                 "veomni/models/transformers/qwen2/generation_utils.py shifts logits)"),
    ),
)


def _is_dreamon(cfg: Config, tok_cfg: Config) -> bool:
    """DreamOn: an expand token named in its config, its tokenizer config or its name."""
    return (cfg.get("expand_token_id") is not None or _has_token(tok_cfg, "<|expand|>")
            or "dreamon" in str(cfg.get("_name_or_path", "")).lower())


def detect(cfg: Config, tok_cfg: Config) -> Family | None:
    """The first family whose test matches, or None."""
    return next((f for f in FAMILIES if f.detect(cfg, tok_cfg)), None)


def is_chat_checkpoint(path: Path, tok_cfg: Config) -> bool:
    """An instruct/chat-tuned checkpoint: it has a chat template and its name says so."""
    name = "/".join(path.resolve().parts[-4:]).lower()  # hub cache: models--org--name/...
    return bool(tok_cfg.get("chat_template") or (path / "chat_template.jinja").is_file()) \
        and any(w in name for w in ("instruct", "grpo", "chat"))


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
                raise ModelError(f"added token {entry['content']!r} should be id {i}")
    return tok


def token_id(tok: Tokenizer, ref: int | str | None, fallback: int | None = None) -> int | None:
    if ref is None or isinstance(ref, int):
        return fallback if ref is None else ref
    return tok.token_to_id(ref)


# -- spec, config, weights -------------------------------------------------------------------
END_OF_TURN = ("<|im_end|>", "<|dlm_pad|>", "<|eot_id|>", "<|endoftext|>")


def spec_fields(fam: Family, cfg: Config, tok: Tokenizer, tok_cfg: Config | None = None,
                gen_cfg: Config | None = None, chat: bool = False) -> dict[str, Any]:
    """The ``dlm.json`` fields of a checkpoint of family `fam`, each id read from the
    checkpoint itself where it names one (config.json, generation_config.json, the
    tokenizer), the adapter table otherwise; ``sources`` says which for every field."""
    tok_cfg, gen_cfg = tok_cfg or {}, gen_cfg or {}
    sources: dict[str, str] = {}

    def pick(name: str, table: int | str | None, token_text: str | None = None,
             tokenizer_first: bool = False) -> int | None:
        if tokenizer_first and token_text and (i := tok.token_to_id(token_text)) is not None:
            sources[name] = "tokenizer_config.json"
            return i
        for where, conf in (("config.json", cfg), ("generation_config.json", gen_cfg)):
            if isinstance(conf.get(name), int) and not isinstance(conf.get(name), bool):
                sources[name] = where
                return conf[name]
        if token_text and (i := tok.token_to_id(token_text)) is not None:
            sources[name] = "tokenizer_config.json"
            return i
        if isinstance(table, str):
            if (i := tok.token_to_id(table)) is not None:
                sources[name] = f"tokenizer ({table})"
                return i
            return None
        if table is not None:
            sources[name] = "adapter table"
        return table

    mask = pick("mask_token_id", fam.mask, _mask_token(tok_cfg))
    if mask is None:
        raise ModelError(f"{fam.name}: no mask token: config.json has no mask_token_id, the "
                         f"tokenizer config names none and the tokenizer has no {fam.mask!r}")
    if sources.get("mask_token_id") == "adapter table" and "mask" not in str(
            tok.id_to_token(mask)).lower():  # the table's id is another token here
        raise ModelError(f"{fam.name}: no mask token: the checkpoint names none, and id {mask} "
                         f"of the adapter table is {tok.id_to_token(mask)!r} in its tokenizer")
    eos = pick("eos_token_id", fam.eos)
    if eos is None:
        raise ModelError(f"{fam.name}: no end token: config.json has no eos_token_id")
    pad = pick("pad_token_id", fam.pad if fam.pad is not None else eos)
    # the published prompts take bos from the tokenizer (DreamOn: tokenizer.bos_token_id)
    bos = pick("bos_token_id", None, _special_text(tok_cfg, "bos_token"), tokenizer_first=True)
    block = int(cfg.get(fam.block_size_key, fam.default_block_size)) if fam.block_size_key else 0
    prompt = "chat" if chat else fam.prompt
    if prompt in ("bos", "bos_eos") and bos is None:
        raise ModelError(f"{fam.name}: its prompt starts with a bos token, and neither "
                         "config.json nor the tokenizer config names one")
    ends = [i for t in (END_OF_TURN if prompt == "chat" else ())
            if (i := tok.token_to_id(t)) is not None and i not in (eos, pad)]
    return {
        "mask_token_id": mask, "eos_token_id": eos, "pad_token_id": pad,
        "bos_token_id": bos, "end_token_ids": ends,
        "expand_token_id": tok.token_to_id(fam.expand) if fam.expand else None,
        "delete_token_id": eos if fam.eos_deletes else None,
        "logits_shift": fam.logits_shift,
        "block_size": block,
        "prompt_format": prompt,
        "max_context": int(cfg.get("max_position_embeddings")
                           or cfg.get("max_sequence_length") or 4096),
        "training": {"family": fam.name, "sources": list(fam.sources)},
        "sources": sources,
    }


def _special_text(tok_cfg: Config, key: str) -> str | None:
    value = tok_cfg.get(key)
    return value.get("content") if isinstance(value, dict) else value


def backbone_config(fam: Family, cfg: Config) -> Config:
    """A transformers qwen2/llama-style config dict for ``DenoiserConfig.from_hf``."""
    out = _backbone(fam, cfg)
    out["rope_fp32"] = fam.rope_fp32
    return out


def _backbone(fam: Family, cfg: Config) -> Config:
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
            "rope_scaling": cfg.get("rope_scaling"),
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
    rows = ["| family | checkpoints | mask | shift | expand | block | prompt | sources |",
            "|---|---|---|---|---|---|---|---|"]
    for f in FAMILIES:
        block = f"{f.block_size_key} ({f.default_block_size})" if f.block_size_key else "-"
        rows.append(f"| {f.name} | {f.checkpoints} | {f.mask} | {'yes' if f.logits_shift else 'no'}"
                    f" | {f.expand or '-'} | {block} | {f.prompt} | {'; '.join(f.sources)} |")
    return "\n".join(rows)
