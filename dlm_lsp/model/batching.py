"""Several fill-in-the-middle requests decoded together: one denoiser pass per step for all.

A shared server gets requests with different prefixes, suffixes and token budgets. They are
laid out in one batch so that every row's slots sit at the same positions:

    row b:  [pad …] prefix_b  [mask × max_tokens_b][pad …]  suffix_b [pad …]
            └─ left padding ┘  └────── the span: S slots ─────┘          └ right padding ┘

Padding is hidden from attention by a key mask, and the slots a short request does not own
start as pad (its span ends there). Rotary position encodings are relative, so shifting a
row right by its left padding does not change what the model computes for it. The rows then
go through the sampler's one decoding loop (:func:`~dlm_lsp.model.sampler.decode_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dlm_lsp.model.checkpoint import LoadedModel
from dlm_lsp.model.sampler import SamplerConfig, decode_rows


@dataclass
class FimRequest:
    """One request: token ids around the middle, its token budget and temperature."""

    prefix_ids: Sequence[int]
    suffix_ids: Sequence[int]
    max_tokens: int
    temperature: float = 0.0
    first_tokens: tuple[int, ...] = ()  # token healing: what the first slot may take


@dataclass
class FimResult:
    tokens: list[int]
    forward_passes: int  # of the whole batch (shared by its rows)


def layout(requests: Sequence[FimRequest], pad: int, mask: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, T), span_of (T,), key_mask (B, T)) for `requests`, as in the module docstring."""
    P = max(len(r.prefix_ids) for r in requests)
    S = max(r.max_tokens for r in requests)
    Q = max(len(r.suffix_ids) for r in requests)
    rows, keys = [], []
    for r in requests:
        left, own, right = P - len(r.prefix_ids), r.max_tokens, Q - len(r.suffix_ids)
        rows.append([pad] * left + list(r.prefix_ids) + [mask] * own + [pad] * (S - own)
                    + list(r.suffix_ids) + [pad] * right)
        keys.append([False] * left + [True] * (len(r.prefix_ids) + own) + [False] * (S - own)
                    + [True] * len(r.suffix_ids) + [False] * right)
    span_of = torch.full((P + S + Q,), -1, dtype=torch.long, device=device)
    span_of[P:P + S] = 0
    return (torch.tensor(rows, dtype=torch.long, device=device), span_of,
            torch.tensor(keys, dtype=torch.bool, device=device))


def sample_fim_batch(model: LoadedModel, requests: Sequence[FimRequest], cfg: SamplerConfig,
                     should_stop: Callable[[], bool] = lambda: False,
                     drop_rows: Callable[[], Sequence[int]] | None = None) -> list[FimResult]:
    """Decode `requests` in one batch; the middle's tokens of each, in order. `drop_rows`
    names requests whose callers are gone: they end at the next step, the others go on."""
    if not requests:
        return []
    spec = model.spec
    x, span_of, key_mask = layout(requests, spec.pad_token_id, spec.mask_token_id,
                                  model.device)
    temps = torch.tensor([r.temperature for r in requests], dtype=torch.float32,
                         device=model.device)
    result = decode_rows(model.denoiser, spec, x, span_of, cfg, temps, key_mask, should_stop,
                         drop_rows, [r.first_tokens for r in requests],
                         finality=model.finality)
    return [FimResult(cand.spans[0], result.forward_passes) for cand in result.candidates]
