"""Which masked slots a denoising step commits: the published decoders' orderings and
schedules, and the editor's confidence threshold, as small functions the sampler calls.

Orderings (the score that ranks slots, higher first), after Dream's ``sample_tokens``:

- ``confidence``: the probability of the proposed token (LLaDA's low-confidence remasking,
  Dream's ``maskgit_plus``),
- ``entropy``: the negative entropy of the slot's distribution (Dream's and DiffuCoder's
  ``entropy``),
- ``margin``: top-1 minus top-2 probability (Dream's ``topk_margin``).

Schedules (how many slots a step commits, and which are eligible):

- ``threshold``: every slot at least this confident, at least one (the editor default),
- ``linear``: Dream's: ``int(n_masked * (1 - s / t))`` on ``linspace(1, eps, steps + 1)``,
  all that remain at the last step,
- ``one``: exactly one per step (DreamOn, and LLaDA / Fast-dLLM v2 at one token a step),
- ``p2``: Open-dCoder's path planning: every step re-masks the least confident slots so that
  a fraction ``(i + 1) / steps`` of them stays written.

A ``block_length`` restricts eligibility to the first block of a span that still has masks
(LLaDA's semi-autoregressive blocks; Fast-dLLM v2's sub-blocks inside its 32-token blocks).
"""

from __future__ import annotations

import torch

ORDERS = ("confidence", "entropy", "margin")
SCHEDULES = ("threshold", "linear", "one", "p2")


def scores(probs: torch.Tensor, chosen: torch.Tensor, order: str) -> torch.Tensor:
    """(B, P) ranking scores from the (B, P, V) distributions and the chosen tokens' (B, P)
    probabilities, higher = commit first."""
    if order == "confidence":
        return chosen
    if order == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(-1)
    if order == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    raise ValueError(f"unknown ordering {order!r}; one of {', '.join(ORDERS)}")


def linear_count(n_masked: torch.Tensor, step: int, steps: int, eps: float) -> torch.Tensor:
    """Dream's transfer count for step `step` of `steps` (per row, from its masked count)."""
    if step >= steps - 1:
        return n_masked
    t = 1.0 - (1.0 - eps) * step / steps  # linspace(1, eps, steps + 1)[step]
    s = 1.0 - (1.0 - eps) * (step + 1) / steps
    return (n_masked.float() * (1.0 - s / t)).long()


def block_eligible(masked: torch.Tensor, offsets: torch.Tensor, span_ids: torch.Tensor,
                   block_length: int) -> torch.Tensor:
    """(B, P) mask of the masked slots in the first block of their span that still has a
    mask. `offsets` (P,) are the slots' block coordinates (offset in the span, or absolute
    position for blocks aligned to the sequence) and `span_ids` (P,) their spans."""
    block = offsets // block_length  # (P,)
    out = torch.zeros_like(masked)
    for j in span_ids.unique().tolist():
        cols = span_ids == j
        sub = masked[:, cols]  # (B, n)
        big = torch.iinfo(torch.long).max
        first = torch.where(sub, block[cols][None, :], torch.full_like(sub, big, dtype=torch.long))
        current = first.min(dim=1, keepdim=True).values  # (B, 1)
        out[:, cols] = sub & (block[cols][None, :] == current)
    return out


def pick(score: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor,
         positions: torch.Tensor, length: int) -> torch.Tensor:
    """(B, P) the `count` (B,) highest-scoring eligible slots of each row.

    Ranked with ``torch.topk`` over the whole (B, T) sequence, -inf where not eligible, as
    Dream and LLaDA rank them: equal scores (a shifted model's first two slots share one
    row of logits) then resolve as theirs do.
    """
    B = score.shape[0]
    full = torch.full((B, length), -torch.inf, dtype=score.dtype, device=score.device)
    full[:, positions] = torch.where(eligible, score, torch.full_like(score, -torch.inf))
    chosen = torch.zeros_like(full, dtype=torch.bool)
    for b in range(B):
        k = min(int(count[b]), int(eligible[b].sum()))
        if k > 0:
            chosen[b, torch.topk(full[b], k).indices] = True
    return chosen[:, positions] & eligible


def p2_remask(score: torch.Tensor, slots_open: torch.Tensor, step: int, steps: int,
              n_slots: int) -> torch.Tensor:
    """(B, P) slots Open-dCoder's ``p2`` leaves (or puts back) masked at `step`: the
    ``floor(n_slots * (1 - (step + 1) / steps))`` least confident of all slots."""
    # in float32, as Open-dLLM computes it: (12 * (1 - 1/12)) floors to 10 there, not 11
    keep_masked = int(torch.floor(torch.tensor(float(n_slots)) * (1.0 - (step + 1) / steps)))
    if keep_masked <= 0:
        return torch.zeros_like(slots_open)
    low = torch.where(slots_open, score, torch.full_like(score, torch.inf))
    ranks = low.argsort(dim=1, stable=True).argsort(dim=1)
    return slots_open & (ranks < keep_masked)
