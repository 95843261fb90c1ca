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
