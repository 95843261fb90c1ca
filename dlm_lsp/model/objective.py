"""Training rows: masked diffusion, infilling with a variable-length end, and AR with FIM; and
the weighted loss over them (:func:`loss_on`).

Every row function here is pure (token lists in, a `Row` out) so that tests can check
layouts. Shared by training (``training/``) and by learning a repository (``dlm_lsp.adapt``).

Diffusion rows follow LLaDA/MDLM: draw t ~ U(0, 1), mask each token with probability t, and
weight the cross-entropy of the masked tokens by 1/t. Infilling rows put the middle into
*slots* between its prefix and suffix exactly as the server's sampler lays them out, so that
inference is in distribution. The model has to end the middle itself; two mechanisms:

- ``eos``: there are at least as many slots as middle tokens; the slot after the middle is
  ``<eos>`` and the rest ``<pad>`` (the sampler ends a span at its first end token).
- ``expand`` (DreamOn): there may be fewer slots than tokens. The middle is cut into one
  contiguous group per slot; a slot holding one token predicts it, a slot holding more
  predicts ``<expand>`` (which the sampler turns into two masks). With more slots than
  tokens it is the ``eos`` layout.

The autoregressive twin trains on plain text and on fill-in-the-middle rows, in PSM or SPM
order (``dlm_lsp.model.autoregressive.fim_prompt``, shared with decoding so that the two
cannot disagree).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dlm_lsp.model.autoregressive import fim_prompt
from dlm_lsp.model.denoiser import Denoiser

IGNORE = -100


@dataclass(frozen=True)
class Specials:
    mask: int
    pad: int
    eos: int
    expand: int
    fim_prefix: int
    fim_suffix: int
    fim_middle: int


@dataclass
class Row:
    """One training sequence: model input, targets (IGNORE: no loss) and loss weights."""

    ids: list[int]
    targets: list[int]
    weights: list[float]
    scored: int  # positions the loss is normalised by (the row's length or its slots)


def draw_t(rng: random.Random, low: float = 1e-3) -> float:
    """Masking ratio t ~ U(low, 1); `low` bounds the 1/t weight."""
    return low + (1.0 - low) * rng.random()


def diffusion_row(tokens: list[int], sp: Specials, rng: random.Random) -> Row:
    """Mask each token with probability t; masked tokens are predicted with weight 1/t."""
    t = draw_t(rng)
    ids, targets, weights = [], [], []
    masked_any = False
    for tok in tokens:
        if rng.random() < t:
            ids.append(sp.mask)
            targets.append(tok)
            weights.append(1.0 / t)
            masked_any = True
        else:
            ids.append(tok)
            targets.append(IGNORE)
            weights.append(0.0)
    if not masked_any and tokens:  # always predict at least one token
        i = rng.randrange(len(tokens))
        ids[i], targets[i], weights[i] = sp.mask, tokens[i], 1.0 / t
    return Row(ids, targets, weights, scored=len(tokens))


def group_sizes(n_tokens: int, n_slots: int, rng: random.Random) -> list[int]:
    """Cut `n_tokens` into `n_slots` contiguous groups of at least one token each."""
    assert 1 <= n_slots <= n_tokens
    cuts = sorted(rng.sample(range(1, n_tokens), n_slots - 1))
    bounds = [0, *cuts, n_tokens]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def slot_targets(middle: list[int], n_slots: int, mechanism: str, sp: Specials,
                 rng: random.Random) -> list[int]:
    """What each slot should become: middle tokens, then eos and pads (or expand groups)."""
    n = len(middle)
    if n_slots >= n:
        end = [sp.eos] + [sp.pad] * (n_slots - n - 1) if n_slots > n else []
        return middle + end
    if mechanism != "expand":
        raise ValueError(f"{n_slots} slots cannot hold {n} tokens without expand")
    out, i = [], 0
    for size in group_sizes(n, n_slots, rng):
        out.append(middle[i] if size == 1 else sp.expand)
        i += size
    return out


def infill_row(prefix: list[int], middle: list[int], suffix: list[int], n_slots: int,
               mechanism: str, sp: Specials, rng: random.Random,
               end_weight: float = 1.0, left_to_right: bool = False) -> Row:
    """[prefix][slots][suffix] with the slots partly masked (ratio t) and scored.

    The ``<eos>`` slot's loss is multiplied by `end_weight`: it is one slot of many, yet
    where the model ends a middle decides whether a short line (``v``, ``1``) comes out clean.
    `left_to_right`: the slots are shown up to a random one and hidden from there on, the
    states a decoder that commits the leftmost slots first goes through (block diffusion's
    clean left context, Arriola et al., 2025), instead of hidden one by one at random.
    """
    targets = slot_targets(middle, n_slots, mechanism, sp, rng)
    n = len(middle)
    if left_to_right:
        # slots before `shown` are written, the rest (the end too) open
        shown = rng.randint(0, min(n, n_slots - 1))
        t = (n_slots - shown) / n_slots
    else:
        t = draw_t(rng)
    end_masked = rng.random() < t  # eos and the pads after it are shown or hidden together
    slot_ids, slot_w = [], []
    for j, tok in enumerate(targets):
        if left_to_right:
            hide = j >= shown or tok == sp.expand
        elif j >= n and n_slots > n:
            hide = end_masked
        else:
            hide = tok == sp.expand or rng.random() < t  # a committed expand never stays
        slot_ids.append(sp.mask if hide else tok)
        slot_w.append((end_weight if j == n and n_slots > n else 1.0) / t if hide else 0.0)
    if not any(slot_w):
        slot_ids[0], slot_w[0] = sp.mask, 1.0 / t
    ids = prefix + slot_ids + suffix
    tgt = [IGNORE] * len(prefix)
    tgt += [tok if w else IGNORE for tok, w in zip(targets, slot_w, strict=True)]
    tgt += [IGNORE] * len(suffix)
    weights = [0.0] * len(prefix) + slot_w + [0.0] * len(suffix)
    return Row(ids, tgt, weights, scored=n_slots)


def choose_slots(n_middle: int, mechanism: str, rng: random.Random,
                 budgets: tuple[int, ...] = (8, 16, 24, 32, 48, 64, 96)) -> int:
    """Slot count for a middle of `n_middle` tokens, spread like the server's budgets."""
    if mechanism == "expand" and rng.random() < 0.5:
        return max(1, min(n_middle, round(n_middle * rng.uniform(0.2, 1.0))))
    return max(n_middle + 1, rng.choice(budgets) + rng.randint(-4, 4))


def ar_row(tokens: list[int]) -> Row:
    """Next-token prediction on plain text."""
    return Row(tokens[:-1], tokens[1:], [1.0] * (len(tokens) - 1), scored=len(tokens) - 1)


def ar_fim_row(prefix: list[int], middle: list[int], suffix: list[int], sp: Specials,
               order: str = "spm") -> Row:
    """``fim_prompt(P, S) M <eos>`` in `order`, every next token scored."""
    sentinels = (sp.fim_prefix, sp.fim_suffix, sp.fim_middle)
    return ar_row([*fim_prompt(prefix, suffix, sentinels, order), *middle, sp.eos])


def fit_context(prefix: list[int], suffix: list[int], room: int,
                rng: random.Random) -> tuple[list[int], list[int]]:
    """Keep the end of the prefix and the start of the suffix within `room` tokens."""
    if len(prefix) + len(suffix) <= room:
        return prefix, suffix
    keep_suffix = min(len(suffix), max(room - len(prefix), int(room * rng.uniform(0.15, 0.5))))
    keep_prefix = min(len(prefix), room - keep_suffix)
    keep_suffix = min(len(suffix), room - keep_prefix)
    return prefix[len(prefix) - keep_prefix:], suffix[:keep_suffix]


def head_loss(lm_head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
    """Sum of weighted cross-entropies of the scored rows `h` (N, C). Compiled, the output
    layer and its softmax are fused: a third of an AR step on CPU otherwise."""
    ce = F.cross_entropy(lm_head(h).float(), targets, reduction="none")
    return (ce * weights).sum()


def loss_on(model: Denoiser, batch: dict[str, torch.Tensor], causal: bool,
            shift: bool = False, hidden=None, head=None) -> torch.Tensor:  # noqa: ANN001
    """Weighted cross-entropy, normalised by the scored positions of the batch.

    Logits are computed only where the loss is: the masked positions of a diffusion row
    (about half of them) save a third of the step on CPU, where the output layer is large.
    `hidden` and `head` are `model.hidden_states` and `head_loss`, or compiled versions.
    """
    hidden, head = hidden or model.hidden_states, head or head_loss
    h = hidden(batch["ids"], causal=causal, key_mask=batch["key_mask"])
    weights, targets = batch["weights"], batch["targets"]
    if shift:  # position j predicts token j + 1, as the AR model it started from (Dream)
        h, weights, targets = h[:, :-1], weights[:, 1:], targets[:, 1:]
    scored = weights > 0
    return head(model.lm_head, h[scored], targets[scored], weights[scored]) / batch["scored"].sum()
