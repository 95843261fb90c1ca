"""A Qwen2/LLaMA-style transformer run with bidirectional attention, in one file.

The weights use the transformers names (``model.layers.N.self_attn.q_proj.weight`` ...),
so a ``Qwen2ForCausalLM``/``LlamaForCausalLM`` checkpoint loads as is. Attention is
bidirectional: every position sees the whole sequence, which is what a masked diffusion
model needs to denoise a span from both sides.

The context K/V cache follows Fast-dLLM's "dual cache": one full forward stores K/V for
every position; later denoising steps recompute only the positions that are still being
written (the masked spans) and attend to the stored K/V of the prefix and suffix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DenoiserConfig:
    """Backbone sizes, read from a transformers ``config.json``."""

    vocab_size: int = 8192
    hidden_size: int = 384  # d_model
    intermediate_size: int = 1024  # SwiGLU inner width
    num_hidden_layers: int = 6
    num_attention_heads: int = 6
    num_key_value_heads: int = 2  # GQA: query heads share K/V heads in groups
    head_dim: int | None = None  # defaults to hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    attention_bias: bool = True  # Qwen2 has q/k/v biases, LLaMA has none
    tie_word_embeddings: bool = False
    # > 0: block diffusion (Fast-dLLM v2): a position sees every position of its own block
    # and the blocks before it, none after. Set from dlm.json, not from config.json.
    block_size: int = 0
    rope_fp32: bool = False  # rotate q/k in fp32 whatever the weights' dtype (LLaDA)
    rope_scaling: dict[str, Any] | None = None  # config.json's; "linear" is applied

    def rope_warnings(self) -> list[str]:
        """What of the config's rope_scaling is not applied, for the user to know."""
        kind = (self.rope_scaling or {}).get("rope_type") or (self.rope_scaling or {}).get(
            "type")
        if kind in (None, "default", "linear"):
            return []
        return [f"rope_scaling {kind!r} is not implemented: positions beyond the model's "
                "original window are not rescaled (short contexts are unaffected)"]

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> DenoiserConfig:
        """Build from a transformers config dict (qwen2 or llama model_type)."""
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        theta = cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0
        bias = cfg.get("attention_bias")
        if bias is None:
            bias = cfg.get("model_type", "qwen2") == "qwen2"
        n_heads = cfg["num_attention_heads"]
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=n_heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or n_heads,
            head_dim=cfg.get("head_dim"),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            attention_bias=bool(bias),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rope_fp32=bool(cfg.get("rope_fp32", False)),
            rope_scaling=cfg.get("rope_scaling") or None,
        )

    def to_hf(self) -> dict[str, Any]:
        """The transformers ``config.json`` of this backbone (model_type qwen2)."""
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.dim_head,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "use_sliding_window": False,
            "torch_dtype": "float32",
        }


@dataclass
class KVCache:
    """Per-layer K/V of the whole sequence, (B, H_kv, T, D) each; empty until a full forward."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    @property
    def filled(self) -> bool:
        return bool(self.keys)

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.dim_head
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        # matmul + softmax instead of SDPA's CPU flash kernel: its backward is the slowest
        # part of a CPU training step in bf16 (training sets this, serving does not)
        self.math_attention = False

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C): the positions computed in this call
        cos: torch.Tensor,  # (T, hd)
        sin: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        positions: torch.Tensor,  # (T,) absolute positions of x's rows
        causal: bool,
        mask: torch.Tensor | None = None,  # bool, broadcast to (B, H, T, T_keys); True = see
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
        # rotary embedding before the head transpose: after it, compiled bf16 training on
        # CPU computed NaN gradients for K
        cos, sin = cos[:, None], sin[:, None]  # (T, 1, hd)
        dt = q.dtype
        if cos.dtype != dt:  # fp32 rotary embeddings (LLaDA): rotate in fp32, then cast back
            q, k = q.float(), k.float()
        q = (q * cos + rotate_half(q) * sin).to(dt).transpose(1, 2)  # (B, H, T, hd)
        k = (k * cos + rotate_half(k) * sin).to(dt).transpose(1, 2)  # (B, Hkv, T, hd)
        if cache is not None:
            if len(cache.keys) == layer:  # full forward: store K/V of every position
                cache.keys.append(k)
                cache.values.append(v)
            else:  # cached step: overwrite the recomputed positions, attend to all
                cache.keys[layer][:, :, positions] = k
                cache.values[layer][:, :, positions] = v
                k, v = cache.keys[layer], cache.values[layer]
        if self.math_attention:
            y = _math_attention(q, k, v, mask, causal)
        else:
            if self.n_kv != self.n_heads:  # GQA: repeat K/V heads for each query group
                rep = self.n_heads // self.n_kv
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               is_causal=causal and mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """Softmax attention written out (softmax in fp32), the same result as SDPA.

    Query heads are grouped over their shared K/V head by broadcasting, not by repeating
    K/V: compiled bf16 backward of a repeat gave NaN gradients for K on CPU.
    """
    B, H, T, D = q.shape
    kv = k.shape[1]
    q = q.view(B, kv, H // kv, T, D)  # (B, Hkv, group, T, D)
    scores = (q @ k.unsqueeze(2).transpose(-1, -2)) * (1.0 / math.sqrt(D))  # (.., T, T_keys)
    if mask is None and causal:
        mask = torch.ones(T, k.shape[-2], dtype=torch.bool, device=q.device).tril()
    scores = scores.float()
    if mask is not None:
        if mask.dim() == 4:  # (B or 1, 1, T or 1, T_keys): add the group axis
            mask = mask.unsqueeze(2)
        scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, dim=-1).to(v.dtype) @ v.unsqueeze(2)  # (B, Hkv, group, T, D)
    return y.view(B, H, T, D)


class MLP(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache, layer, positions, causal, mask):  # noqa: ANN001
        h = self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, positions, causal, mask)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """``model.*`` in the transformers layout: embeddings, blocks, final norm."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Denoiser(nn.Module):
    """Bidirectional transformer returning logits; see the module docstring for the cache."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.init_rope()

    def init_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)build the rotary frequencies, e.g. after weights were assigned from meta."""
        hd = self.cfg.dim_head
        inv_freq = 1.0 / (self.cfg.rope_theta
                          ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._rope_len = 0

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        need = int(positions.max()) + 1
        if need > self._rope_len:  # grow the cos/sin table in powers of two
            n = max(256, 1 << math.ceil(math.log2(need)))
            t = torch.arange(n, dtype=torch.float32, device=self.inv_freq.device)
            scaling = self.cfg.rope_scaling or {}
            if (scaling.get("rope_type") or scaling.get("type")) == "linear":
                t = t / float(scaling.get("factor", 1.0))
            freqs = torch.outer(t, self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos, self._sin, self._rope_len = emb.cos(), emb.sin(), n
        dtype = self.model.embed_tokens.weight.dtype  # (a quantised lm_head has no .dtype)
        if self.cfg.rope_fp32:
            dtype = torch.float32
        return self._cos[positions].to(dtype), self._sin[positions].to(dtype)

    def forward(
        self,
        ids: torch.Tensor,  # (B, T) tokens at `positions`
        positions: torch.Tensor | None = None,  # (T,) absolute positions; None: 0..T-1
        cache: KVCache | None = None,
        logits_at: torch.Tensor | None = None,  # (N,) row indices into T to compute logits for
        causal: bool = False,
        key_mask: torch.Tensor | None = None,  # (B, T) bool: False = padding, never attended
    ) -> torch.Tensor:
        """Logits (B, N, V) for the rows `logits_at` (all rows when None).

        With an empty `cache` this is a full forward that fills it; with a filled cache,
        `ids` are only the positions being rewritten and attend to every cached position
        (with `causal`, to the cached positions up to their own: autoregressive decoding).
        """
        x = self.hidden_states(ids, positions, cache, causal, key_mask)
        if logits_at is not None:
            x = x[:, logits_at]
        return self.lm_head(x).float()

    def hidden_states(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        causal: bool = False,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, C); `forward` without the output projection."""
        B, T = ids.shape
        if positions is None:
            positions = torch.arange(T, device=ids.device)
        if cache is not None and not cache.filled:
            assert T == len(positions) and int(positions[-1]) == T - 1, "full forward first"
        cos, sin = self._rope(positions)
        mask = _attention_mask(positions, cache, causal, key_mask, self.cfg.block_size)
        x = self.model.embed_tokens(ids)  # (B, T, C)
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin, cache, i, positions, causal, mask)
        return self.model.norm(x)


def _attention_mask(positions: torch.Tensor, cache: KVCache | None, causal: bool,
                    key_mask: torch.Tensor | None, block_size: int = 0) -> torch.Tensor | None:
    """None when SDPA's own modes suffice (no mask, or `is_causal` on a full forward)."""
    cached_step = cache is not None and cache.filled
    mask = None
    if causal and cached_step:
        keys = torch.arange(cache.length, device=positions.device)
        mask = keys[None, :] <= positions[:, None]  # (T, T_keys)
    elif block_size > 0 and not causal:
        keys = torch.arange(cache.length, device=positions.device) if cached_step else positions
        mask = keys[None, :] // block_size <= positions[:, None] // block_size
    if key_mask is not None and not bool(key_mask.all()):
        mask = key_mask[:, None, None, :] if mask is None else mask & key_mask[:, None, None, :]
        if causal and not cached_step:
            n = len(positions)
            mask = mask & torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
    return mask


def count_parameters(model: Denoiser) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; tied weights are counted once, and int8
    linear layers (whose packed weights are not parameters) by their shapes."""
    seen: set[int] = set()
    total = 0
    tied = model.cfg.tie_word_embeddings
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        packed = "quantized" in type(module).__module__ and hasattr(module, "in_features")
        if packed and not (tied and name == "lm_head"):
            total += module.in_features * module.out_features
            total += module.out_features if module.bias() is not None else 0
    emb = model.cfg.vocab_size * model.cfg.hidden_size * (1 if tied else 2)
    return total, total - emb
