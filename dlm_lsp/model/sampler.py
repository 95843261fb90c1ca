"""Masked-diffusion decoding: fill masked slots between fixed text, many tokens per pass.

The input is a list of pieces: token lists that stay fixed (prefix, code between holes,
suffix) and integers, each the number of masked slots of one span. Every step runs the
denoiser once, proposes a token for every masked slot, and commits those whose confidence
reaches the threshold (at least one per row, and enough to finish within ``max_steps``
if every slot took content: an end is never forced, so a span whose model proposes ends
past its next slot can take more steps).

The length of a span is not known in advance. A span ends where the model commits an
end token (eos or pad): the slots after it become pad and are dropped from the output.
An end is only committed at the span's first open slot (content before it is written) and
never at its first slot, so an unsure model cannot return an empty or truncated span. A
caller can name stop tokens (single-line mode: line breaks) that end a span after
themselves. With a window, each step looks at only the first few open slots of each span
(semi-autoregressive, as LLaDA's blocks but sliding), which costs less on a CPU and loses
little: far slots are rarely confident enough to commit. If the
checkpoint has an expand token, committing it turns that slot into two masks (DreamOn), so a
span can also grow; with a delete token (DreamOn's eos) a committed one removes its slot.
The first step is a full forward that fills the K/V cache; later steps recompute only the
slots (Fast-dLLM dual cache) until enough of them changed to refresh. With ``lookup``, a
step that commits a span's first open slot also commits the slots after it whose proposals
equal a draft looked up in the context (``drafts.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dlm_lsp.model.checkpoint import DlmSpec
from dlm_lsp.model.denoiser import Denoiser, KVCache
from dlm_lsp.model.drafts import ContextIndex, commit_drafts, find_drafts, span_positions
from dlm_lsp.model.finality import FinalityFilter, features
from dlm_lsp.model.unmasking import block_eligible, linear_count, p2_remask, scores
from dlm_lsp.model.unmasking import pick as pick_top


class Cancelled(Exception):
    """Raised between steps when the caller's ``should_stop`` says so."""

    def __init__(self, forward_passes: int = 0):
        super().__init__(f"cancelled after {forward_passes} forward passes")
        self.forward_passes = forward_passes


@dataclass
class SamplerConfig:
    """Decoding knobs; defaults suit an editor (greedy, confident tokens in parallel)."""

    threshold: float = 0.9  # commit every slot this confident; >= 1.0 commits one per step
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_steps: int = 64  # step budget: forces more content slots per step (never an end)
    candidates: int = 1  # rows decoded together in one batch: the n-best list
    nbest_temperature: float = 0.8  # rows after the first, when temperature is 0
    remask_threshold: float = 0.0  # > 0: re-mask committed tokens whose probability fell below
    use_cache: bool = True  # dual K/V cache between full forwards
    # Full forward once this share of slots changed since the last one. 1.0 refreshes only
    # when the layout changes (once per span, as Fast-dLLM refreshes once per block); 0.5
    # cost +50% time at 24 slots on the 2-core CPU.
    refresh_ratio: float = 1.0
    max_span: int = 256  # expand tokens never grow a span beyond this
    seed: int | None = 0
    # Tokens that end their span after themselves (kept, later slots become pad): the
    # newline tokens in single-line mode, where nothing after the line is used.
    stop_ids: tuple[int, ...] = ()
    # > 0: only the first `window` open slots of each span get logits and may be committed
    # (LLaDA's semi-autoregressive blocks, sliding). Far slots are rarely confident, and
    # their logits cost the most on CPU (the output layer is half the weights).
    window: int = 0
    # A published family's own decoding (``model/recipes.py``), instead of the threshold
    # above: `order` ranks slots, `schedule` says how many a step commits (unmasking.py).
    order: str = "confidence"  # confidence | entropy | margin
    schedule: str = "threshold"  # threshold | linear | one | p2
    eps: float = 1e-3  # the linear schedule's last timestep (Dream)
    block_length: int = 0  # > 0: commit only in the first block of a span with masks
    block_aligned: bool = False  # blocks counted from position 0, not the span's start
    ar_block_starts: bool = False  # Fast-dLLM v2: a block's first token comes first, alone
    # True: the editor's rules for a span's end (never empty, an end only at the first open
    # slot, slots after an end become pad at once). False: decode every slot as the family
    # does and keep the tokens before the first end.
    span_ends: bool = True
    stop_at_end: bool = False  # a span is done once an end has no open slot before it
    # Token healing (pipeline/healing.py): when set, the first slot may only take these.
    first_tokens: tuple[int, ...] = ()
    # Whitespace-only tokens: while a span holds nothing else, it may neither end nor stop
    # (the editor sets them on a blank line, where an answer of blanks is no answer).
    blank_ids: tuple[int, ...] = ()
    # Line-break tokens: when set, a span may not end before it writes one after content (a
    # block on a blank line is whole lines: the model's end after `self` is no answer there).
    line_ids: tuple[int, ...] = ()
    # > 0: the span is a block whose lines start at this column. Left-to-right decoding stops
    # at the first line indented less (the code after the block; the editor cuts it anyway);
    # the denoiser ends its spans itself.
    block_column: int = 0
    # The prefix token that token healing took back: written again at a span's first slot it
    # adds nothing to the prefix, so the blank rule does not count it as content.
    healed_token: int = -1
    # Subtracted from the logits of the tokens that end a span (and of the stop tokens):
    # > 0 lets a span go on where the model hesitates between one more token and the end.
    end_bias: float = 0.0
    # > 0 with a finality filter (model/finality.py): commit every slot whose prediction the
    # filter trusts at least this much, instead of the confidence threshold
    filter_threshold: float = 0.0
    # > 0: drafts looked up in the row's fixed text with keys of up to this many tokens
    # (drafts.py): a step also commits the draft tokens its proposals agree with
    lookup: int = 0
    # < 1: a draft token is also taken where the model gives it this probability (copying)
    copy_threshold: float = 1.0
    # > 0: a span closes at the first open slot after this step's commits where the model
    # proposes its end with this probability (else the threshold above decides)
    end_threshold: float = 0.0


@dataclass
class Candidate:
    """One decoded row: the tokens of each span, with their confidences."""

    spans: list[list[int]]
    confidences: list[list[float]]

    @property
    def mean_confidence(self) -> float:
        flat = [c for span in self.confidences for c in span]
        return sum(flat) / len(flat) if flat else 0.0


# Overrides that decode one token a step whatever the span's length and the editor's step
# budget (which forces several a step): the reference that parallel decoding is held to.
ONE_TOKEN_A_STEP: dict[str, object] = {"threshold": 1.0, "window": 0, "max_steps": 1024,
                                       "filter_threshold": 0.0}


@dataclass
class SampleResult:
    candidates: list[Candidate]
    forward_passes: int
    steps: int
    history: list[int] = field(default_factory=list)  # tokens committed per step (row 0)
    final: torch.Tensor | None = None  # (B, T) every position at the end (the trace's labels)

    @property
    def generated_tokens(self) -> int:
        return sum(len(s) for s in self.candidates[0].spans) if self.candidates else 0


Piece = Sequence[int] | int


def fill_spans_in_turn(pieces: Sequence[Piece],
                       fill: Callable[[list[int], list[int], int], list[int]]) -> None:
    """For decoders that write one span at a time (the AR twin, block diffusion): call
    ``fill(before, after, n)`` for each span of `n` slots, left to right, where `before` is
    all text up to the span (earlier spans as `fill` returned them) and `after` the fixed
    piece right after it."""
    before: list[int] = []
    for i, piece in enumerate(pieces):
        if not isinstance(piece, int):
            before = before + list(piece)
            continue
        after = next((list(p) for p in pieces[i + 1:] if not isinstance(p, int)), [])
        before = before + fill(before, after, piece)


def sample(
    denoiser: Denoiser,
    spec: DlmSpec,
    pieces: Sequence[Piece],
    cfg: SamplerConfig,
    should_stop: Callable[[], bool] = lambda: False,
    finality: FinalityFilter | None = None,
    trace: list | None = None,
) -> SampleResult:
    """Decode every span of `pieces` jointly; see the module docstring."""
    device = next(denoiser.parameters()).device
    B = max(1, cfg.candidates)
    x, span_of = _layout(pieces, spec.mask_token_id, B, device)  # (B, T), (T,)
    temps = torch.full((B,), cfg.temperature, device=device)
    if cfg.temperature == 0 and B > 1:
        temps[1:] = cfg.nbest_temperature
    return decode_rows(denoiser, spec, x, span_of, cfg, temps, should_stop=should_stop,
                       finality=finality, trace=trace)


def decode_rows(
    denoiser: Denoiser,
    spec: DlmSpec,
    x: torch.Tensor,  # (B, T) fixed tokens and masks, one row per candidate or request
    span_of: torch.Tensor,  # (T,) span index per position, -1 for fixed tokens
    cfg: SamplerConfig,
    temps: torch.Tensor,  # (B,) temperature per row
    key_mask: torch.Tensor | None = None,  # (B, T) False = padding no row attends to
    should_stop: Callable[[], bool] = lambda: False,
    drop_rows: Callable[[], Sequence[int]] | None = None,  # rows to end now (callers gone)
    first_tokens: Sequence[Sequence[int]] | None = None,  # per row, else cfg.first_tokens
    finality: FinalityFilter | None = None,  # with cfg.filter_threshold: what to commit
    trace: list | None = None,  # gets (features, tokens, positions, open, picked) a step
) -> SampleResult:
    """The decoding loop over prepared rows: :func:`sample` for one request, or several
    requests padded to one layout (``batching.py``; no expand tokens there). Token healing
    constrains the first slot: per row with `first_tokens` (an empty list leaves a row
    free), else every row to ``cfg.first_tokens``."""
    device = x.device
    if first_tokens is None and cfg.first_tokens:
        first_tokens = [cfg.first_tokens] * x.shape[0]
    first_allowed: torch.Tensor | None = None  # (B, V), built at the first forward
    conf = torch.zeros(x.shape, device=device)
    remasked = torch.zeros(x.shape, dtype=torch.bool, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    cache: KVCache | None = None
    changed = 0  # slots rewritten since the last full forward
    nfe = steps = 0
    history: list[int] = []
    stop = torch.tensor(cfg.stop_ids, dtype=torch.long, device=device)
    ends = _ends(spec, device)
    no_blank_end = blank_enders(cfg, ends)
    not_content = torch.tensor([*cfg.blank_ids, spec.mask_token_id, spec.pad_token_id,
                                spec.eos_token_id], dtype=torch.long, device=device)
    line_ids = torch.tensor(cfg.line_ids, dtype=torch.long, device=device)
    end_bias_ids = torch.cat([ends, stop])
    if cfg.max_steps <= 0:  # one step per slot, as the published recipes decode
        cfg = dataclasses.replace(cfg, max_steps=max(1, int((span_of >= 0).sum())))
    indexes = None  # drafts: the fixed text of each row, indexed once (its layout is fixed)
    if cfg.lookup > 0 and cfg.schedule == "threshold" and spec.expand_token_id is None \
            and spec.delete_token_id is None:
        fixed = (span_of < 0)[None, :].expand_as(x)
        if key_mask is not None:
            fixed = fixed & key_mask
        indexes = [ContextIndex(row, keep) for row, keep in zip(x.tolist(), fixed.tolist(),
                                                                 strict=True)]
        proposed_only = frozenset(ends.tolist()) | frozenset(cfg.stop_ids)
        positions = span_positions(span_of)

    with torch.inference_mode():
        while True:
            slots = (span_of >= 0).nonzero().squeeze(1)  # (S,) positions of all slots
            if drop_rows is not None and (gone := list(drop_rows())):
                _end_rows(x, slots, gone, spec)
            masked = x[:, slots] == spec.mask_token_id  # (B, S)
            if not masked.any():
                break
            if should_stop():
                raise Cancelled(nfe)
            if cfg.schedule != "threshold":
                done = _published_step(denoiser, spec, x, span_of, slots, masked, conf, cfg,
                                       temps, gen, key_mask, ends, steps)
                steps += 1
                nfe += done
                if done:
                    history.append(-1)
                if cfg.stop_at_end and _all_ended(x, span_of, spec, ends):
                    break
                if cfg.schedule == "p2" and steps >= cfg.max_steps:
                    break
                if spec.expand_token_id is not None or spec.delete_token_id is not None:
                    x, conf, remasked, span_of, resized = _resize(x, conf, remasked, span_of,
                                                                  spec, cfg, masked_before=masked)
                continue
            # Logits only where they are used: masked slots (all slots when remasking),
            # within the window (never narrower than this step's quota).
            need = torch.ceil(masked.sum(1) / max(cfg.max_steps - steps, 1)).clamp(min=1)
            want = masked.any(0) if cfg.remask_threshold <= 0 else torch.ones_like(masked[0])
            # copying takes tokens the model would not write: only on the longest matches
            found = {} if indexes is None else find_drafts(
                indexes, x, positions, spec.mask_token_id, cfg.lookup,
                shortest=cfg.lookup if cfg.copy_threshold < 1.0 else 1)
            if cfg.window > 0:  # (drafts stay within it: a wider window changes what the
                width = max(cfg.window, int(need.max()))  # threshold and filter commit)
                want &= _leading(masked.any(0), span_of[slots], width)
            if spec.block_size > 0:  # a block-diffusion model never writes past its block
                want &= block_eligible(masked, slots, span_of[slots], spec.block_size).any(0)
            pos = slots[want]
            refresh = cache is None or changed > cfg.refresh_ratio * len(slots)
            logits, cache = _forward(denoiser, x, pos, slots, cache, refresh, cfg, spec,
                                     key_mask)
            nfe += 1
            _no_empty_spans(logits, pos, span_of, spec)
            if cfg.end_bias:
                logits[..., end_bias_ids] -= cfg.end_bias
            blank_at = None  # (B, P) slots of a span that holds no content before them
            if len(no_blank_end):
                blank_at = _blank_before(x, span_of, slots, not_content, cfg.healed_token,
                                         line_ids)[
                    :, torch.searchsorted(slots, pos)]
                # An end takes effect at a span's first open slot: only there is it ruled
                # out (elsewhere it is merely not committed), so the other slots' confidences
                # are the model's own.
                open_now = x[:, pos] == spec.mask_token_id
                forbid_ids(logits, blank_at & _first_open(open_now, span_of[pos]), no_blank_end)
            if first_tokens is not None and any(first_tokens):
                if first_allowed is None:
                    first_allowed = first_token_mask(first_tokens, logits.shape[-1], device)
                keep_first_tokens(logits, pos == slots[0], first_allowed)
            if refresh:
                changed = 0
            tokens, probs, full = _propose(logits, temps, cfg.top_p, spec, gen,
                                           key_mask is None
                                           and _can_expand(span_of, cfg.max_span, spec))

            # Which masked slots to commit this step. A span's end (eos/pad) is only
            # committed at its first open slot, so an unsure model cannot close a span
            # before writing it; an end right after this step's content closes it at once.
            m = x[:, pos] == spec.mask_token_id
            before = x[:, slots].clone()
            is_end = torch.isin(tokens, ends)
            eligible = m & (~is_end | _first_open(m, span_of[pos]))
            if blank_at is not None:
                eligible &= ~(blank_at & torch.isin(tokens, no_blank_end))
            use_filter = finality is not None and cfg.filter_threshold > 0
            trusted = None
            if use_filter or trace is not None:
                feats = features(full, tokens, m, span_of[pos], torch.isin(tokens, end_bias_ids),
                                 steps)
            if use_filter:  # the filter decides; the most confident still goes first
                assert finality is not None
                trusted = finality(feats) >= cfg.filter_threshold
                pick = _select(probs, eligible, 1.0, need) | (eligible & trusted)
            else:
                pick = _select(probs, eligible, cfg.threshold, need)
            if found:
                commit_drafts(found, x, pos, tokens, probs, full, eligible, pick,
                              spec.mask_token_id, cfg.copy_threshold, proposed_only)
            sure = (probs >= cfg.threshold) | (trusted if use_filter else False)
            if cfg.end_threshold > 0:
                sure = sure | (probs >= cfg.end_threshold)
            close = _first_open(m & ~pick, span_of[pos]) & is_end & sure
            if blank_at is not None and bool(close.any()):  # blank still, with this step's
                after = x.clone()                            # words written?
                after[:, pos] = torch.where(pick, tokens, after[:, pos])
                still = _blank_before(after, span_of, slots, not_content, cfg.healed_token,
                                      line_ids)
                close &= ~(still[:, torch.searchsorted(slots, pos)]
                           & torch.isin(tokens, no_blank_end))
            pick |= close
            if trace is not None:  # what the step saw, and what it committed
                trace.append((feats, tokens.clone(), pos.clone(), m.clone(), pick.clone()))
            steps_left = max(cfg.max_steps - steps, 1)
            old = x[:, pos]
            x[:, pos] = torch.where(pick, tokens, old)
            conf[:, pos] = torch.where(pick, probs, conf[:, pos])
            history.append(int(pick[0].sum()))
            if cfg.remask_threshold > 0 and steps_left > 2:
                _remask(x, conf, remasked, pos, tokens, probs, pick, cfg.remask_threshold, spec)
            if spec.delete_token_id is not None:
                _eos_fills_right(x, span_of, slots, masked, spec)
            _close_after_end(x, span_of, spec, stop)
            changed += int((x[:, slots] != before).any(0).sum())
            steps += 1
            if spec.expand_token_id is not None or spec.delete_token_id is not None:
                x, conf, remasked, span_of, resized = _resize(x, conf, remasked, span_of,
                                                              spec, cfg, masked_before=masked)
                if resized:
                    cache = None  # positions after the span moved: recompute everything

    return SampleResult(_collect(x, conf, span_of, spec), nfe, steps, history,
                        x if trace is not None else None)


def _end_rows(x: torch.Tensor, slots: torch.Tensor, rows: list[int], spec: DlmSpec) -> None:
    """End `rows` where they stand: their open slots become pad, so no step waits on them."""
    idx = torch.tensor(rows, dtype=torch.long, device=x.device)[:, None]
    sub = x[idx, slots[None, :]]
    x[idx, slots[None, :]] = torch.where(sub == spec.mask_token_id, spec.pad_token_id, sub)


def _layout(pieces: Sequence[Piece], mask_id: int, B: int, device: torch.device):
    """Token row and span index per position (-1 for fixed tokens)."""
    ids: list[int] = []
    span_of: list[int] = []
    n_spans = 0
    for piece in pieces:
        if isinstance(piece, int):
            ids += [mask_id] * piece
            span_of += [n_spans] * piece
            n_spans += 1
        else:
            ids += list(piece)
            span_of += [-1] * len(piece)
    x = torch.tensor(ids, dtype=torch.long, device=device).unsqueeze(0).repeat(B, 1)
    return x, torch.tensor(span_of, dtype=torch.long, device=device)


def _forward(denoiser, x, pos, slots, cache, refresh, cfg, spec, key_mask):  # noqa: ANN001, ANN202
    """Logits (B, P, V) for slot positions `pos`, by full forward or cached step."""
    # shifted models predict i from i-1; position 0 uses its own row, as Dream does
    rows = (pos - 1).clamp(min=0) if spec.logits_shift else pos
    extra = {} if key_mask is None else {"key_mask": key_mask}
    if refresh or not cfg.use_cache:
        cache = KVCache() if cfg.use_cache else None
        return denoiser(x, cache=cache, logits_at=rows, **extra), cache
    recompute = torch.unique(torch.cat([slots, rows]))  # sorted
    local = torch.searchsorted(recompute, rows)
    return denoiser(x[:, recompute], positions=recompute, cache=cache, logits_at=local,
                    **extra), cache


def _can_expand(span_of: torch.Tensor, max_span: int, spec: DlmSpec) -> bool:
    if spec.expand_token_id is None:
        return False
    counts = torch.bincount(span_of[span_of >= 0])
    return bool((counts < max_span).all())


def _propose(logits, temps, top_p, spec, gen, allow_expand,  # noqa: ANN001, ANN202
             forbid_mask=True):  # noqa: ANN001
    """A token and its probability for every position: argmax, or a tempered top-p sample;
    and the (tempered, filtered) distributions they came from. The published decoders may
    propose the mask token itself (the slot then stays open); the editor's path may not."""
    if forbid_mask:
        logits[..., spec.mask_token_id] = -math.inf
    if spec.expand_token_id is not None and not allow_expand:
        logits[..., spec.expand_token_id] = -math.inf
    t = torch.where(temps > 0, temps, torch.ones_like(temps))[:, None, None]
    probs = torch.softmax(logits / t, dim=-1)  # (B, P, V)
    tokens = probs.argmax(-1)
    sampled_rows = (temps > 0).nonzero().squeeze(1)
    for b in sampled_rows.tolist():
        p = probs[b]
        if top_p < 1.0:
            sorted_p, order = p.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top token
            p = torch.zeros_like(p).scatter(-1, order, sorted_p * keep)
            p = p / p.sum(-1, keepdim=True)
            probs[b] = p
        tokens[b] = torch.multinomial(p, 1, generator=gen).squeeze(-1)
    return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), probs


def _published_step(denoiser, spec, x, span_of, slots, masked, conf, cfg, temps, gen,  # noqa: ANN001
                    key_mask, ends, step) -> int:
    """One step of a published family's decoding (``cfg.schedule`` != "threshold"): no
    cache, no window. Returns the forward passes it ran (0 when the schedule commits
    nothing this step, as Dream's linear schedule does early on)."""
    span_ids = span_of[slots]
    if cfg.schedule == "linear":
        count = linear_count(masked.sum(1), step, cfg.max_steps, cfg.eps)
        if not bool((count > 0).any()):
            return 0
    else:
        count = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
    pos = slots
    logits, _ = _forward(denoiser, x, pos, slots, None, True,
                         dataclasses.replace(cfg, use_cache=False), spec, key_mask)
    tokens, chosen, probs = _propose(logits, temps, cfg.top_p, spec, gen,
                                     key_mask is None and _can_expand(span_of, cfg.max_span,
                                                                      spec),
                                     forbid_mask=cfg.span_ends)
    score = scores(probs, chosen, cfg.order)
    if cfg.schedule == "p2":  # re-mask the least confident slots, written or not
        back = p2_remask(score, torch.ones_like(masked), step, cfg.max_steps, len(slots))
        fill = masked & ~back
        x[:, slots] = torch.where(back, spec.mask_token_id,
                                  torch.where(fill, tokens, x[:, slots]))
        conf[:, slots] = torch.where(fill, chosen, torch.where(back, 0.0, conf[:, slots]))
        return 1
    eligible = masked.clone()
    if cfg.block_length > 0:
        offsets = slots if cfg.block_aligned else _span_offsets(span_ids)
        eligible &= block_eligible(masked, offsets, span_ids, cfg.block_length)
    if cfg.ar_block_starts:
        eligible = _ar_block_start(eligible, masked, slots, span_ids, spec.block_size)
    pick = pick_top(score, eligible, count, slots, x.shape[1])
    x[:, slots] = torch.where(pick, tokens, x[:, slots])
    conf[:, slots] = torch.where(pick, chosen, conf[:, slots])
    if spec.delete_token_id is not None:
        _eos_fills_right(x, span_of, slots, masked, spec)
    return 1


def _span_offsets(span_ids: torch.Tensor) -> torch.Tensor:
    """(P,) each slot's offset inside its span (slots in position order)."""
    out = torch.zeros_like(span_ids)
    for j in span_ids.unique().tolist():
        cols = (span_ids == j).nonzero().squeeze(1)
        out[cols] = torch.arange(len(cols), device=span_ids.device)
    return out


def _ar_block_start(eligible: torch.Tensor, masked: torch.Tensor, slots: torch.Tensor,
                    span_ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """Fast-dLLM v2 starts each block with its first token alone, written from the block
    before (an autoregressive step): when the first open slot of a span sits at a block's
    first position, only it may be committed."""
    out = eligible.clone()
    for j in span_ids.unique().tolist():
        cols = (span_ids == j).nonzero().squeeze(1)
        for b in range(masked.shape[0]):
            open_cols = cols[masked[b, cols]]
            if len(open_cols) and int(slots[open_cols[0]]) % block_size == 0:
                row = torch.zeros_like(out[b, cols])
                row[(cols == open_cols[0]).nonzero().squeeze(1)] = True
                out[b, cols] = row & masked[b, cols]
    return out


def _all_ended(x: torch.Tensor, span_of: torch.Tensor, spec: DlmSpec,
               ends: torch.Tensor) -> bool:
    """Every span of every row holds an end token with no open slot before it."""
    for j in range(int(span_of.max()) + 1 if len(span_of) else 0):
        seg = x[:, span_of == j]
        is_end = torch.isin(seg, ends)
        if not bool(is_end.any(1).all()):
            return False
        first = is_end.int().argmax(1)
        before = torch.arange(seg.shape[1], device=x.device)[None, :] < first[:, None]
        if bool(((seg == spec.mask_token_id) & before).any()):
            return False
    return True


def _eos_fills_right(x: torch.Tensor, span_of: torch.Tensor, slots: torch.Tensor,
                     masked: torch.Tensor, spec: DlmSpec) -> None:
    """DreamOn: once a delete (eos) token is written in a span, the open slots after it
    become delete tokens too (``pad_eos_to_right``), so the span ends there."""
    span_ids = span_of[slots]
    for j in span_ids.unique().tolist():
        cols = (span_ids == j).nonzero().squeeze(1)
        seg = x[:, slots[cols]]
        is_del = (seg == spec.delete_token_id) & masked[:, cols]
        after = is_del.int().cummax(dim=1).values.bool()
        fill = after & (seg == spec.mask_token_id)
        x[:, slots[cols]] = torch.where(fill, spec.delete_token_id, seg)


def _select(probs: torch.Tensor, eligible: torch.Tensor, threshold: float,
            need: torch.Tensor) -> torch.Tensor:
    """Eligible slots to commit: all above `threshold`, and at least the `need` (B,) best."""
    score = torch.where(eligible, probs, torch.full_like(probs, -1.0))
    pick = eligible & (score >= threshold) if threshold < 1.0 else torch.zeros_like(eligible)
    ranks = score.argsort(dim=1, descending=True).argsort(dim=1)
    return pick | (eligible & (ranks < need[:, None]))


def _ends(spec: DlmSpec, device: torch.device | str = "cpu") -> torch.Tensor:
    """Tokens that end a span: eos, pad and a chat model's end-of-turn tokens; eos and pad
    are not ends when eos deletes its slot (DreamOn, whose spans change length by expand and
    delete tokens)."""
    ids = [] if spec.delete_token_id is not None else [spec.eos_token_id, spec.pad_token_id]
    return torch.tensor(ids + list(spec.end_token_ids), dtype=torch.long, device=device)


def _no_empty_spans(logits: torch.Tensor, pos: torch.Tensor, span_of: torch.Tensor,
                    spec: DlmSpec) -> None:
    """A span's first slot never ends it: an empty completion is no completion."""
    prev = span_of[(pos - 1).clamp(min=0)]
    starts = (span_of[pos] >= 0) & ((pos == 0) | (span_of[pos] != prev))
    logits[:, starts, spec.eos_token_id] = -math.inf
    logits[:, starts, spec.pad_token_id] = -math.inf


def blank_enders(cfg: SamplerConfig, ends: torch.Tensor) -> torch.Tensor:
    """The tokens a span may not take while it is blank (or, with ``cfg.line_ids``, holds no
    whole line yet): its ends, and the stop tokens that are blank themselves (a line break).
    Empty without ``cfg.blank_ids`` and ``cfg.line_ids``."""
    if not cfg.blank_ids and not cfg.line_ids:
        return ends[:0]
    blank_stops = sorted(set(cfg.stop_ids) & set(cfg.blank_ids))
    return torch.cat([ends, torch.tensor(blank_stops, dtype=torch.long, device=ends.device)])


def forbid_ids(logits: torch.Tensor, where: torch.Tensor, ids: torch.Tensor) -> None:
    """Rule out tokens `ids` at the (B, P) rows `where` of the (B, P, V) logits."""
    logits[..., ids] = logits[..., ids].masked_fill(where[..., None], -math.inf)


def _blank_before(x: torch.Tensor, span_of: torch.Tensor, slots: torch.Tensor,
                  not_content: torch.Tensor, healed_token: int = -1,
                  line_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S) for each slot: whether its span holds nothing but `not_content` tokens (the
    blank ones, masks and ends) before it; the `healed_token` at a span's first slot is no
    content either (it only spells the prefix's end again). With `line_ids` (non-empty):
    whether the span holds no line break after content before it (no whole line yet)."""
    span_ids = span_of[slots]
    first = torch.ones_like(span_ids, dtype=torch.bool)
    first[1:] = span_ids[1:] != span_ids[:-1]
    is_content = ~torch.isin(x[:, slots], not_content)
    if healed_token >= 0:
        is_content &= ~(first[None, :] & (x[:, slots] == healed_token))
    is_content = is_content.long()
    before = is_content.cumsum(1) - is_content  # (B, S) content slots before each slot
    start = torch.cummax(torch.where(first, torch.arange(len(slots), device=x.device), 0),
                         0).values  # (S,) index of each slot's span start
    if line_ids is None or len(line_ids) == 0:
        return (before - before[:, start]) == 0
    upto = before + is_content - before[:, start]  # content in the span up to each slot
    breaks = (torch.isin(x[:, slots], line_ids) & (upto > 0)).long()
    breaks_before = breaks.cumsum(1) - breaks
    return (breaks_before - breaks_before[:, start]) == 0


def first_token_mask(rows: Sequence[Sequence[int]], vocab: int,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Token healing: (B, V), the tokens each row's first slot may take (a row with no
    list: every token)."""
    allowed = torch.ones(len(rows), vocab, dtype=torch.bool, device=device)
    for b, ids in enumerate(rows):
        if ids:
            allowed[b] = False
            allowed[b, torch.tensor(list(ids), dtype=torch.long, device=device)] = True
    return allowed


def keep_first_tokens(logits: torch.Tensor, at: torch.Tensor, allowed: torch.Tensor) -> None:
    """At the positions `at` (P,) of `logits` (B, P, V), each row keeps only the tokens its
    row of `allowed` (B, V, from :func:`first_token_mask`) lets through."""
    logits[:, at] = logits[:, at].masked_fill(~allowed[:, None], -math.inf)


def _leading(open_: torch.Tensor, span_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Mask of the first `n` open slots of each span along the last dimension of `open_`
    ((S,) or (B, P); slots in position order, `span_ids` their span per column)."""
    out = torch.zeros_like(open_)
    for j in span_ids.unique().tolist():
        cols = (span_ids == j).nonzero().squeeze(1)
        sub = open_[..., cols]
        out[..., cols] = sub & (sub.int().cumsum(-1) <= n)
    return out


def _first_open(open_: torch.Tensor, span_ids: torch.Tensor) -> torch.Tensor:
    """(B, P) mask of the first open slot of each span, for slots in position order."""
    return _leading(open_, span_ids, 1)


def _remask(x, conf, remasked, pos, tokens, probs, pick, threshold, spec) -> None:  # noqa: ANN001
    """Put back the mask on earlier commits the model no longer believes (once each)."""
    cur = x[:, pos]
    # probability the current logits give to the token already there
    agree = tokens == cur
    p_cur = torch.where(agree, probs, torch.zeros_like(probs))
    ends = torch.isin(cur, _ends(spec, x.device))
    weak = (cur != spec.mask_token_id) & ~pick & ~ends & ~remasked[:, pos] & (p_cur < threshold)
    if weak.any():
        cols = pos.unsqueeze(0).expand_as(weak)[weak]
        rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(weak)[weak]
        x[rows, cols] = spec.mask_token_id
        conf[rows, cols] = 0.0
        remasked[rows, cols] = True


def _close_after_end(x: torch.Tensor, span_of: torch.Tensor, spec: DlmSpec,
                     stop: torch.Tensor | None = None) -> None:
    """In each span, every slot after a committed end token (eos/pad, or a `stop` token,
    which is itself kept) becomes pad."""
    closing = _ends(spec, x.device)
    if stop is not None:
        closing = torch.cat([closing, stop])
    for j in range(int(span_of.max()) + 1 if len(span_of) else 0):
        idx = (span_of == j).nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        seg = x[:, idx]
        is_end = torch.isin(seg, closing)
        seen = is_end.int().cummax(dim=1).values.bool()
        after = torch.zeros_like(seen)
        after[:, 1:] = seen[:, :-1]
        x[:, idx] = torch.where(after, torch.full_like(seg, spec.pad_token_id), seg)


def _resize(x, conf, remasked, span_of, spec, cfg, masked_before):  # noqa: ANN001, ANN202
    """DreamOn's variable length: a committed expand token becomes two masks, and a delete
    token written this step (eos) is removed with its slot, at once, as DreamOn's generator
    does. Rows of a batch keep one layout: a shorter span is padded at its end (with pad
    after an end, delete tokens after a deletion, else masks). Returns the new tensors and
    whether any span changed length."""
    slot_pos = (span_of >= 0).nonzero().squeeze(1)
    was_masked = torch.zeros_like(x, dtype=torch.bool)
    was_masked[:, slot_pos] = masked_before
    grow = spec.expand_token_id is not None and bool((x == spec.expand_token_id).any())
    cut = spec.delete_token_id is not None and bool(
        ((x == spec.delete_token_id) & was_masked).any())
    if not (grow or cut):
        return x, conf, remasked, span_of, False
    B = x.shape[0]
    ends = _ends(spec).tolist()
    rows_x, rows_c, rows_r, rows_m = x.tolist(), conf.tolist(), remasked.tolist(), \
        was_masked.tolist()
    spans = span_of.tolist()
    new_x: list[list[int]] = [[] for _ in range(B)]
    new_c: list[list[float]] = [[] for _ in range(B)]
    new_r: list[list[bool]] = [[] for _ in range(B)]
    new_span: list[int] = []
    T = len(spans)
    t = 0
    while t < T:
        j = spans[t]
        if j < 0:
            for b in range(B):
                new_x[b].append(rows_x[b][t])
                new_c[b].append(rows_c[b][t])
                new_r[b].append(rows_r[b][t])
            new_span.append(-1)
            t += 1
            continue
        end = t
        while end < T and spans[end] == j:
            end += 1
        segs = []
        for b in range(B):
            seg_x, seg_c, seg_r = [], [], []
            deleted = False
            for k in range(t, end):
                tok = rows_x[b][k]
                if tok == spec.expand_token_id:
                    seg_x += [spec.mask_token_id, spec.mask_token_id]
                    seg_c += [0.0, 0.0]
                    seg_r += [False, False]
                elif tok == spec.delete_token_id and rows_m[b][k]:
                    deleted = True
                else:
                    seg_x.append(tok)
                    seg_c.append(rows_c[b][k])
                    seg_r.append(rows_r[b][k])
            segs.append((seg_x, seg_c, seg_r, deleted))
        width = min(max(len(sg[0]) for sg in segs), max(cfg.max_span, end - t))
        width = max(width, 1)
        for b, (seg_x, seg_c, seg_r, deleted) in enumerate(segs):
            if any(tok in ends for tok in seg_x):
                fill = spec.pad_token_id
            elif deleted:
                fill = spec.delete_token_id
            else:
                fill = spec.mask_token_id
            extra = width - len(seg_x)
            new_x[b] += seg_x[:width] + [fill] * extra
            new_c[b] += seg_c[:width] + [0.0] * extra
            new_r[b] += seg_r[:width] + [False] * extra
        new_span += [j] * width
        t = end
    dev = x.device
    return (
        torch.tensor(new_x, dtype=torch.long, device=dev),
        torch.tensor(new_c, device=dev),
        torch.tensor(new_r, dtype=torch.bool, device=dev),
        torch.tensor(new_span, dtype=torch.long, device=dev),
        True,
    )


def _collect(x: torch.Tensor, conf: torch.Tensor, span_of: torch.Tensor,
             spec: DlmSpec) -> list[Candidate]:
    """Per row and span: the tokens before the first end token, with their confidences."""
    dropped = {spec.mask_token_id, spec.expand_token_id, spec.delete_token_id}
    ends = _ends(spec).tolist()
    n_spans = int(span_of.max()) + 1 if len(span_of) else 0
    out = []
    for b in range(x.shape[0]):
        spans, confs = [], []
        for j in range(n_spans):
            idx = (span_of == j).nonzero().squeeze(1)
            toks, cs = [], []
            for tok, c in zip(x[b, idx].tolist(), conf[b, idx].tolist(), strict=True):
                if tok in ends:
                    break
                if tok not in dropped:
                    toks.append(tok)
                    cs.append(c)
            spans.append(toks)
            confs.append(cs)
        out.append(Candidate(spans, confs))
    return out
