"""Drafts looked up in the context: several tokens a pass where the code repeats itself.

Code repeats what is around it (a name, a call, a line written elsewhere in the file or in
a project snippet). Prompt lookup decoding (Saxena, 2023) and REST (He et al., 2024,
"REST: Retrieval-Based Speculative Decoding") draft the next tokens by matching the last
few written tokens against the context and proposing what followed them there; the model
then verifies the draft in the pass it runs anyway. Where a key occurs many times, the
occurrences whose text before it agrees longest with what was written come first (REST
retrieves by the longest suffix match for the same reason): a line of a project snippet
that starts as the cursor's line does beats a short match next to the cursor (rest of line
in alembic and tox with snippets 22.6 -> 23.0 and 24.6 -> 25.0 %, 500 cuts each).

For a denoiser the verification is the pass itself: every open slot of a span already has
the model's proposal. When a step commits a span's first open slot, it also commits the
slots after it whose proposals equal the draft, up to the first that does not. Committing
several masked slots at once goes wrong when their independent proposals do not fit
together; a draft is text that was written as a whole, so proposals that all agree with it
do fit. A run starts only where the model writes anyway: started at a slot the model
would leave for later, it changes the order the model writes in, and with it answers (12
of the 94 obvious lines with the embedded model decoding one token a step; 2 when
anchored, neither of them right either way).

Copying (``accept`` below 1, the ``copyThreshold`` setting) goes further: a draft token is
taken where the model gives it at least that probability without ranking it first, the
draft looked up with the longest key only. It trades the model's own choices for the
context's (kNN-LM and copy mechanisms mix a model's distribution with what the context
says in the same spirit): at 0.05, rest of line in five held-out packages 19.4 -> 22.1 %
from the file alone and 20.3 -> 23.4 % with the workspace's snippets, against 3 of the 94
hand-written obvious lines lost (``bench.workspace``, ``bench.aup``). Both halves count:
copying only where the model would end the line (never over a token of its own) kept one
of those three lines but gave alembic 20.4 / 20.6 % instead of 21.6 / 23.0 (file alone /
with snippets, 500 cuts, 2026-12-05).

Pure functions over token lists; the sampler (``sampler.py``) calls them once per step.
"""

from __future__ import annotations

from collections import defaultdict

import torch


class ContextIndex:
    """Positions of every token of a row's fixed text (prefix, suffix, snippets), by token,
    for n-gram lookups. The fixed text does not change while a span is decoded."""

    def __init__(self, row: list[int], fixed: list[bool]):
        self.row = row
        self.fixed = fixed
        self.at: dict[int, list[int]] = defaultdict(list)
        for p, (tok, is_fixed) in enumerate(zip(row, fixed, strict=True)):
            if is_fixed:
                self.at[tok].append(p)

    def drafts(self, key: list[int], cursor: int, length: int, limit: int = 8,
               before: list[int] | None = None, reach: int = 64) -> list[list[int]]:
        """Continuations of the fixed text after each occurrence of `key` (its last token at
        a fixed position whose next position is fixed too), at most `length` tokens each and
        stopping where the fixed text does, without repeats. The occurrences whose fixed
        text before the key also equals `before` (the tokens written before the key, last
        one nearest) for the longest stretch come first (up to `reach` tokens: a line of a
        project snippet that starts as the cursor's line does beats a short match next to
        the cursor), then the nearest to `cursor`; at most `limit` of them."""
        if not key:
            return []
        n = len(key)
        before = before or []
        hits = []
        for p in self.at.get(key[-1], ()):
            start = p - n + 1
            if start < 0 or p + 1 >= len(self.row) or not self.fixed[p + 1]:
                continue
            if all(self.fixed[q] and self.row[q] == key[q - start] for q in range(start, p)):
                hits.append((-self._agreement(start, before, reach), abs(p - cursor), p))
        hits.sort()
        out: list[list[int]] = []
        for _, _, p in hits:
            cont: list[int] = []
            q = p + 1
            while q < len(self.row) and self.fixed[q] and len(cont) < length:
                cont.append(self.row[q])
                q += 1
            if cont and cont not in out:
                out.append(cont)
            if len(out) >= limit:
                break
        return out

    def _agreement(self, start: int, before: list[int], reach: int) -> int:
        """How many tokens of fixed text just before position `start` equal the end of
        `before`, up to `reach`."""
        k = 0
        while (k < min(reach, len(before)) and start - 1 - k >= 0 and self.fixed[start - 1 - k]
               and self.row[start - 1 - k] == before[-1 - k]):
            k += 1
        return k


def span_drafts(index: ContextIndex, row: list[int], span: list[int], is_open: list[bool],
                longest: int, limit: int = 8, shortest: int = 1, reach: int = 64,
                ) -> tuple[int, list[list[int]]]:
    """For one span (its positions, in order): its first open slot and the drafts for it,
    looked up with the last `longest` tokens before that slot, then shorter keys down to
    `shortest` tokens (the longest matches first). (-1, []) when the span has no open slot."""
    first = next((q for q in span if is_open[q]), -1)
    if first < 0:
        return -1, []
    room = span[-1] - first + 1
    found: list[list[int]] = []
    for n in range(longest, max(shortest, 1) - 1, -1):
        start = first - n
        if start < 0 or any(is_open[q] for q in range(max(start, span[0]), first)):
            continue
        for draft in index.drafts(row[start:first], first, room, limit,
                                  before=row[max(start - reach, 0):start], reach=reach):
            if draft not in found:
                found.append(draft)
        if len(found) >= limit:
            break
    return first, found[:limit]


def accepted_run(draft: list[int], written: list[int], proposals: list[int],
                 eligible: list[bool], probs: torch.Tensor | None = None,
                 accept: float = 1.0, proposed_only: frozenset[int] = frozenset()) -> int:
    """How many slots, from a span's first open slot on, take the draft's tokens this step.

    Per slot from that one on: `written` holds its token, or -1 while it is open;
    `proposals` the model's token for it this step and `eligible` whether it may be
    committed now (an open slot without logits is not). A slot written before must hold the
    draft's token for the run to go on past it. A draft token is taken where it is the
    proposal, or (``accept`` < 1, with `probs` (n, V)) where the model gives it at least
    ``accept`` and it is not one of `proposed_only` (a copy never ends a span itself; it
    may go on where the model would end it, which is where copying gains most: the small
    model ends lines early). Returns the run's length, slots written before included.
    """
    run = 0
    for i, tok in enumerate(draft[:len(written)]):
        if written[i] >= 0:
            if written[i] != tok:
                break
        elif not eligible[i]:
            break
        elif proposals[i] != tok and (accept >= 1.0 or probs is None or tok in proposed_only
                                      or float(probs[i, tok]) < accept):
            break
        run = i + 1
    return run


def span_positions(span_of: torch.Tensor) -> dict[int, list[int]]:
    """Each span's positions, in order, from the (T,) span index per position (-1: fixed)."""
    positions: dict[int, list[int]] = defaultdict(list)
    for q, j in enumerate(span_of.tolist()):
        if j >= 0:
            positions[j].append(q)
    return positions


def find_drafts(indexes: list[ContextIndex], x: torch.Tensor, positions: dict[int, list[int]],
                mask_id: int, longest: int, shortest: int = 1,
                ) -> dict[tuple[int, int], tuple[int, list[list[int]]]]:
    """Per (row, span) with drafts: the span's first open slot and its drafts (keys of
    `longest` down to `shortest` tokens), from the current tokens `x` (B, T) before a step
    and the spans' `positions` (:func:`span_positions`)."""
    out = {}
    for b, index in enumerate(indexes):
        row = x[b].tolist()
        is_open = [tok == mask_id for tok in row]
        for j, span in positions.items():
            first, found = span_drafts(index, row, span, is_open, longest, shortest=shortest)
            if found:
                out[(b, j)] = (first, found)
    return out


def commit_drafts(found: dict[tuple[int, int], tuple[int, list[list[int]]]], x: torch.Tensor,
                  pos: torch.Tensor, tokens: torch.Tensor, chosen: torch.Tensor,
                  full: torch.Tensor, eligible: torch.Tensor, pick: torch.Tensor,
                  mask_id: int, accept: float = 1.0, proposed_only: frozenset[int] = frozenset(),
                  ) -> None:
    """Add to `pick` (B, P) the open slots each span's best draft takes this step (the
    longest accepted run among its drafts; unless copying, only where the step commits the
    span's first open slot itself), writing the draft's tokens into `tokens` and
    their probabilities into `chosen` (they differ from the proposals only when
    ``accept`` < 1, and never for the `proposed_only` tokens: ends and line breaks, which
    the sampler's rules allow only where the model proposes them). `full` (B, P, V) are
    the step's distributions at `pos`."""
    col_of = {q: c for c, q in enumerate(pos.tolist())}
    for (b, _), (first, drafts) in found.items():
        room = max(len(d) for d in drafts)
        qs = list(range(first, min(first + room, x.shape[1])))
        cols = [col_of.get(q, -1) for q in qs]
        if accept >= 1.0 and (cols[0] < 0 or not bool(pick[b, cols[0]])):
            continue  # the model does not write this slot now: a run would change its order
        written = [-1 if tok == mask_id else tok for tok in x[b, qs].tolist()]
        proposals = [int(tokens[b, c]) if c >= 0 else -1 for c in cols]
        ok = [bool(eligible[b, c]) if c >= 0 else False for c in cols]
        probs = full[b, [max(c, 0) for c in cols]] if accept < 1.0 else None
        best, run = [], 0
        for draft in drafts:
            n = accepted_run(draft, written, proposals, ok, probs, accept, proposed_only)
            if n > run:
                best, run = draft, n
        for i in range(run):
            c = cols[i]
            if written[i] < 0 and c >= 0:
                pick[b, c] = True
                tokens[b, c] = best[i]
                chosen[b, c] = full[b, c, best[i]]
