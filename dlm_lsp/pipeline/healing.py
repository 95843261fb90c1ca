"""Token healing: the prefix's last token is taken back, and the answer's first token must
spell it again.

A cursor after ``total += `` leaves a prefix that ends in a lone space token, which code
almost never has: the space belongs to the next word's token (`` v``). A cursor inside a
word (``ret``) leaves a piece of one. Either way the model reads a tokenization it rarely saw
in training. Taking that token back and allowing as first token only those whose text
starts with it lets the model write the token it would have written (`` v``, ``return``);
the taken-back text is cut from the answer again.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from dlm_lsp.model.checkpoint import LoadedModel
from dlm_lsp.model.sampler import SamplerConfig


@dataclass(frozen=True)
class Healing:
    text: str  # what the taken-back token spelled: every answer starts with it
    first_tokens: tuple[int, ...]  # the tokens a span's first slot may take
    token: int = -1  # the token taken back


def heal(model: LoadedModel, prefix_ids: Sequence[int]) -> Healing | None:
    """What to take back from `prefix_ids`, or None when its last token is not worth it
    (a line break, or a token nothing longer starts with)."""
    if not prefix_ids:
        return None
    texts = model.token_texts
    last = prefix_ids[-1]
    text = texts[last] if 0 <= last < len(texts) else ""
    if not text or "\n" in text or "\r" in text:
        return None
    ordered, ids = model.texts_in_order
    start = end = bisect.bisect_left(ordered, text)
    while end < len(ordered) and ordered[end].startswith(text):
        end += 1
    return Healing(text, tuple(sorted(ids[start:end])), last) if end - start > 1 else None


def healed_prefix(model: LoadedModel, prefix_ids: Sequence[int],
                  cfg: SamplerConfig) -> tuple[list[int], Healing | None]:
    """`prefix_ids` with its last token taken back, and the healing, on the editor's own
    path: a published recipe and a chat prompt keep the prompt as it is."""
    healing = None
    if cfg.schedule == "threshold" and model.spec.prompt_format != "chat":
        healing = heal(model, prefix_ids)
    return (list(prefix_ids[:-1]) if healing else list(prefix_ids)), healing


def healed(model: LoadedModel, prefix_ids: Sequence[int], rest: Sequence[Sequence[int] | int],
           cfg: SamplerConfig) -> tuple[list, SamplerConfig, Healing | None]:
    """The pieces and sampler settings to decode `prefix_ids` + `rest` with (see
    :func:`healed_prefix`)."""
    prefix, healing = healed_prefix(model, prefix_ids, cfg)
    if healing is None:
        return [prefix, *rest], cfg, None
    cfg = dataclasses.replace(cfg, first_tokens=healing.first_tokens, healed_token=healing.token)
    return [prefix, *rest], cfg, healing


def unheal(raw: str, healing: Healing | None) -> str:
    """The answer without the text that was taken back from the prefix."""
    if healing and raw.startswith(healing.text):
        return raw[len(healing.text):]
    return raw
