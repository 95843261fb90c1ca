"""Left-to-right decoding for autoregressive checkpoints (the AR twin), behind the same API.

A checkpoint whose ``dlm.json`` says ``training.objective: "ar"`` was trained causally on
fill-in-the-middle rows laid out as :func:`fim_prompt` says, ``training.fim_order`` naming
the order (PSM when absent, as the first twins were trained). The engine runs it with
:func:`sample_autoregressive` instead of the denoiser's sampler, so the server, the CLI and
the benchmarks serve it exactly as they serve the denoiser: that is what makes the speed
comparison in ``bench/`` fair. One forward pass per generated token, with a K/V cache.

Each span is filled in turn, left to right: the prefix is everything before it (earlier
spans already filled), the suffix is the fixed text up to the next span.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from dlm_lsp.model.checkpoint import DlmSpec, LoadedModel
from dlm_lsp.model.denoiser import KVCache
from dlm_lsp.model.sampler import (
    Cancelled,
    Candidate,
    Piece,
    SamplerConfig,
    SampleResult,
    blank_enders,
    fill_spans_in_turn,
    first_token_mask,
    forbid_ids,
    keep_first_tokens,
)

FIM_TOKENS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
FIM_ORDERS = ("psm", "spm")


def is_autoregressive(spec: DlmSpec) -> bool:
    """Whether a checkpoint was trained left to right (decoded here, not by the denoiser)."""
    return spec.training.get("objective") == "ar"


def fim_ids(model: LoadedModel) -> tuple[int, int, int]:
    """Ids of the prefix/suffix/middle sentinels; ValueError if the tokenizer lacks them."""
    ids = tuple(model.tokenizer.token_to_id(t) for t in FIM_TOKENS)
    if any(i is None for i in ids):
        raise ValueError(f"{model.path} has no FIM sentinels: not an AR twin checkpoint")
    return ids  # type: ignore[return-value]


def fim_order(spec: DlmSpec) -> str:
    """The FIM layout a checkpoint was trained on: its ``training.fim_order``, else PSM."""
    order = spec.training.get("fim_order", "psm")
    if order not in FIM_ORDERS:
        raise ValueError(f"unknown fim_order {order!r} in dlm.json (known: {FIM_ORDERS})")
    return order


def fim_prompt(prefix: Sequence[int], suffix: Sequence[int], sentinels: Sequence[int],
               order: str) -> list[int]:
    """The tokens a middle follows; training appends ``M <eos>``, decoding writes M.

    - ``psm`` (Bavarian et al. 2022): ``<fim_prefix> P <fim_suffix> S <fim_middle>``. The
      middle's first token must look back past the whole suffix to the prefix's end.
    - ``spm`` (the variant of Code Llama): ``<fim_prefix> <fim_suffix> S <fim_middle> P``.
      The prefix runs straight into the middle as in plain text, so what a small model learnt
      from plain code (finishing ``self.`` or ``json.``) carries over to infilling.
    """
    fp, fs, fm = sentinels
    if order == "psm":
        return [fp, *prefix, fs, *suffix, fm]
    if order == "spm":
        return [fp, fs, *suffix, fm, *prefix]
    raise ValueError(f"unknown FIM order {order!r} (known: {FIM_ORDERS})")


def sample_autoregressive(
    model: LoadedModel,
    pieces: Sequence[Piece],
    cfg: SamplerConfig,
    should_stop: Callable[[], bool] = lambda: False,
) -> SampleResult:
    """Fill every span of `pieces` left to right; the result has the sampler's shape.

    Row 0 is greedy when ``cfg.temperature`` is 0; further rows (``cfg.candidates``) sample
    at ``cfg.nbest_temperature``, in the same batch.
    """
    B = max(1, cfg.candidates)
    rows: list[list[list[int]]] = [[] for _ in range(B)]  # per row, the tokens of each span
    passes = 0

    def fill(before: list[int], after: list[int], n: int) -> list[int]:
        nonlocal passes
        first = not rows[0]  # healing constrains the first span only
        span_cfg = cfg if first else dataclasses.replace(cfg, first_tokens=())
        spans, used = _fill_span(model, before, after, n, span_cfg, B, should_stop)
        passes += used
        for b in range(B):
            rows[b].append(spans[b])
        return spans[0]

    fill_spans_in_turn(pieces, fill)
    candidates = [Candidate(spans, [[1.0] * len(s) for s in spans]) for spans in rows]
    tokens = sum(len(s) for s in rows[0])
    return SampleResult(candidates, passes, passes, [1] * tokens)


class DedentWatch:
    """Per row, whether the text written so far has started a line indented less than
    `column`: the end of a block, told from the tokens' texts as they come."""

    def __init__(self, texts: Sequence[str], column: int, rows: int):
        self.texts, self.column = texts, column
        self.indent = [-1] * rows  # indentation of the line being started; -1: mid-line

    def update(self, tokens: Sequence[int]) -> list[bool]:
        """Take one token per row; True for the rows whose new line starts too shallow."""
        out = []
        for b, tok in enumerate(tokens):
            text = self.texts[tok] if 0 <= tok < len(self.texts) else ""
            dedent = False
            if "\n" in text:
                text = text.rsplit("\n", 1)[1]
                self.indent[b] = 0
            if self.indent[b] >= 0 and text:
                body = text.lstrip(" \t")
                self.indent[b] += len(text) - len(body)
                if body:
                    dedent = self.indent[b] < self.column
                    self.indent[b] = -1
            out.append(dedent)
        return out


@torch.inference_mode()
def _fill_span(model: LoadedModel, prefix: list[int], suffix: list[int], max_new: int,
               cfg: SamplerConfig, B: int,
               should_stop: Callable[[], bool]) -> tuple[list[list[int]], int]:
    """(tokens per row, forward passes) for one middle of at most `max_new` tokens."""
    prompt = fim_prompt(prefix, suffix, fim_ids(model), fim_order(model.spec))
    net, spec, device = model.denoiser, model.spec, model.device
    n = len(prompt)
    # One causal forward over the prompt fills the cache; the rows after it are room for the
    # tokens still to come (causal masking keeps the prompt blind to them).
    ids = torch.tensor([prompt + [spec.pad_token_id] * max_new] * B, device=device)
    cache = KVCache()
    logits = net(ids, cache=cache, causal=True, logits_at=torch.tensor([n - 1], device=device))
    passes = 1
    temps = torch.full((B,), float(cfg.temperature), device=device)
    if cfg.temperature == 0 and B > 1:
        temps[1:] = cfg.nbest_temperature
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    ends = torch.tensor([spec.eos_token_id, spec.pad_token_id], device=device)
    stops = torch.tensor(cfg.stop_ids, dtype=torch.long, device=device)
    out = torch.full((B, max_new), spec.pad_token_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    if cfg.first_tokens:  # token healing: the first token spells what the prefix gave back
        keep_first_tokens(logits, torch.ones(logits.shape[1], dtype=torch.bool, device=device),
                          first_token_mask([cfg.first_tokens] * B, logits.shape[-1], device))
    no_blank_end = blank_enders(cfg, ends)
    blank = torch.tensor(cfg.blank_ids, dtype=torch.long, device=device)
    line_ids = torch.tensor(cfg.line_ids, dtype=torch.long, device=device)
    still_blank = torch.ones(B, dtype=torch.bool, device=device)  # or no whole line yet
    has_content = torch.zeros(B, dtype=torch.bool, device=device)
    watch = DedentWatch(model.token_texts, cfg.block_column, B) if cfg.block_column > 0 else None
    end_bias_ids = torch.cat([ends, stops])
    for i in range(max_new):
        if cfg.end_bias:
            logits[:, -1, end_bias_ids] -= cfg.end_bias
        if len(no_blank_end):  # as the sampler: a blank span neither ends nor stops
            forbid_ids(logits[:, -1], still_blank, no_blank_end)
        tok = _pick(logits[:, -1], temps, spec, gen)  # (B,)
        ended = torch.isin(tok, ends)
        out[:, i] = torch.where(done | ended, spec.pad_token_id, tok)
        done |= ended | torch.isin(tok, stops)
        if watch is not None:  # the block's end: the line just begun is cut afterwards
            done |= torch.tensor(watch.update(tok.tolist()), device=device)
        # the token healing took back, written again first, is no content yet
        content = ~torch.isin(tok, blank) & ~((tok == cfg.healed_token) & (i == 0))
        if len(line_ids):  # as the sampler: open until a line break after content
            has_content |= content
            still_blank &= ~(has_content & torch.isin(tok, line_ids))
        else:
            still_blank &= ~content
        if bool(done.all()) or i == max_new - 1:
            break
        if should_stop():
            raise Cancelled(passes)
        pos = torch.tensor([n + i], device=device)
        logits = net(tok[:, None], positions=pos, cache=cache, causal=True)
        passes += 1
    spans = [[t for t in row if t != spec.pad_token_id] for row in out.tolist()]
    return spans, passes


def _pick(logits: torch.Tensor, temps: torch.Tensor, spec: DlmSpec,
          gen: torch.Generator) -> torch.Tensor:
    """Greedy for rows at temperature 0, a tempered sample for the others."""
    logits = logits.clone()
    logits[:, spec.mask_token_id] = -math.inf
    tokens = logits.argmax(-1)
    for b in (temps > 0).nonzero().squeeze(1).tolist():
        p = torch.softmax(logits[b] / temps[b], dim=-1)
        tokens[b] = torch.multinomial(p, 1, generator=gen).squeeze(-1)
    return tokens
