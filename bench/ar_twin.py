"""The autoregressive twin: same backbone and tokenizer, causal attention, PSM infilling.

It is the yardstick, not the product: greedy left-to-right decoding with a K/V cache (one
forward pass per generated token), prompted as ``<fim_prefix> P <fim_suffix> S <fim_middle>``
and stopped at ``<eos>`` (or, for a single line, at the first line break).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlm_lsp.model.checkpoint import LoadedModel
from dlm_lsp.model.denoiser import KVCache


@dataclass
class ARResult:
    tokens: list[int]
    forward_passes: int


def fim_ids(model: LoadedModel) -> tuple[int, int, int]:
    tok = model.tokenizer
    ids = tuple(tok.token_to_id(t) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    if any(i is None for i in ids):
        raise ValueError(f"{model.path} has no FIM sentinels: not an AR twin checkpoint")
    return ids  # type: ignore[return-value]


@torch.inference_mode()
def generate(model: LoadedModel, prefix_ids: list[int], suffix_ids: list[int], max_new: int,
             stop_at_newline: bool = False) -> ARResult:
    """Greedy PSM infilling: the middle's tokens, without the end token."""
    fp, fs, fm = fim_ids(model)
    prompt = [fp, *prefix_ids, fs, *suffix_ids, fm]
    net, spec = model.denoiser, model.spec
    device = model.device
    n = len(prompt)
    # One causal forward over the prompt fills the cache; the rows after it are room for the
    # tokens still to come (causal masking keeps the prompt blind to them).
    ids = torch.tensor([prompt + [spec.pad_token_id] * max_new], device=device)
    cache = KVCache()
    logits = net(ids, cache=cache, causal=True, logits_at=torch.tensor([n - 1], device=device))
    passes, out = 1, []
    ends = {spec.eos_token_id, spec.pad_token_id}
    line_breaks = set(model.newline_ids) if stop_at_newline else set()
    for i in range(max_new):
        tok = int(logits[0, -1].argmax())
        if tok in ends:
            break
        out.append(tok)
        if tok in line_breaks:
            break
        if i == max_new - 1:
            break
        pos = torch.tensor([n + i], device=device)
        logits = net(torch.tensor([[tok]], device=device), positions=pos, cache=cache,
                     causal=True)
        passes += 1
    return ARResult(out, passes)
