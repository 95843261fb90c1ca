"""A learned finality filter: which masked slots already hold their final token.

A confidence threshold commits a slot when the model is sure of it; a small model is rarely
sure, so it commits about one slot a step. Learn2PD (Bao et al., 2025, "Learning to Parallel:
Accelerating Diffusion LLMs via Learnable Parallel Decoding") trains a tiny filter instead:
from features of the model's own prediction at a slot, predict whether that prediction is
the one the slot ends up with when decoding one token a step. Committing every slot the
filter trusts reproduces the one-token-a-step answer in fewer passes.

The features (:func:`features`) are the prediction's probability, its margin over the
runner-up and the distribution's entropy, the slot's place among its span's open slots,
how many are open, whether the prediction ends the span, whether its left neighbour is
decided, and the step. The filter is a 2-layer MLP (~330 parameters), trained by
``training.finality`` and shipped beside the weights (``finality.safetensors``, named in
``dlm.json`` with its default threshold).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

N_FEATURES = 8
HIDDEN = 32


def features(full: torch.Tensor, tokens: torch.Tensor, open_: torch.Tensor,
             span_ids: torch.Tensor, is_end: torch.Tensor, step: int) -> torch.Tensor:
    """(B, P, N_FEATURES) for the slots at (B, P): `full` is the (B, P, V) distribution,
    `tokens` its argmax, `open_` which slots are still masked, `span_ids` (P,) their span,
    `is_end` whether the token would end its span."""
    top2 = full.topk(2, dim=-1).values
    p1, p2 = top2[..., 0], top2[..., 1]
    entropy = -(full * full.clamp_min(1e-12).log()).sum(-1) / math.log(full.shape[-1])
    # place among the open slots of the span, and the span's open count
    rank = torch.zeros_like(p1)
    count = torch.zeros_like(p1)
    left_done = torch.zeros_like(p1)
    for j in span_ids.unique().tolist():
        cols = (span_ids == j).nonzero().squeeze(1)
        o = open_[:, cols].float()
        rank[:, cols] = o.cumsum(-1) - o
        count[:, cols] = o.sum(-1, keepdim=True)
        left = torch.ones_like(o)
        left[:, 1:] = 1 - o[:, :-1]
        left_done[:, cols] = left
    return torch.stack([p1, p1 - p2, entropy, rank / 8, count / 24, is_end.float(), left_done,
                        torch.full_like(p1, min(step, 32) / 8)], dim=-1)


class FinalityFilter(nn.Module):
    """P(this slot's current prediction is final) from :func:`features`."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.threshold = 0.9  # the default the checkpoint ships

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(feats).squeeze(-1))

    def save(self, path: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path),
                  metadata={"threshold": str(self.threshold)})

    @classmethod
    def load(cls, path: Path, threshold: float | None = None) -> FinalityFilter:
        state = load_file(str(path))
        f = cls(hidden=state["net.0.weight"].shape[0])
        f.load_state_dict(state)
        if threshold is not None:
            f.threshold = threshold
        return f.eval()
