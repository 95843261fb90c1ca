"""The model shapes training knows by name, and how a new model's weights start.

A shape is (hidden size, layers, attention heads, key/value heads); the MLP is 8/3 of the
hidden size (SwiGLU) and the embeddings are tied, as in the shipped model.
"""

from __future__ import annotations

import math

import torch

from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig

SIZES = {  # name: (hidden, layers, heads, kv heads)
    "tiny": (64, 2, 4, 2),
    "small": (256, 6, 4, 2),
    "base": (384, 6, 6, 2),
    # the sweep towards the latency budget (bench/shapes.py): 15.7M, 26.2M, 31.7M parameters
    "d384x8": (384, 8, 6, 2),
    "d512x8": (512, 8, 8, 2),
    "d512x10": (512, 10, 8, 2),
}


def model_config(size: str, vocab_size: int) -> DenoiserConfig:
    d, n_layers, heads, kv = SIZES[size]
    return DenoiserConfig(
        vocab_size=vocab_size, hidden_size=d, intermediate_size=d * 8 // 3,
        num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=kv,
        tie_word_embeddings=True, rope_theta=10000.0, max_position_embeddings=2048,
    )


def init_weights(model: Denoiser, seed: int) -> None:
    """GPT-2 style: N(0, 0.02), output projections scaled by 1/sqrt(2 * layers)."""
    torch.manual_seed(seed)
    n_layers = model.cfg.num_hidden_layers
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, 0.02 / math.sqrt(2 * n_layers))
            else:
                p.normal_(0.0, 0.02)
