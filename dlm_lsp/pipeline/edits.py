"""Instant Edit: fill holes jointly, regenerate a selection, repair a syntax error.

Each function returns document edits (offsets into the text it was given) and never
touches the server; the server turns them into a WorkspaceEdit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dlm_lsp.model.checkpoint import LoadedModel
from dlm_lsp.pipeline.chat import chat_ids, edit_request, unfence
from dlm_lsp.pipeline.context import build_context
from dlm_lsp.pipeline.engine import Engine, context_budget, insertion_checker
from dlm_lsp.pipeline.postprocess import cut_at_dedent, first_line, reindent, trim_until_parses
from dlm_lsp.pipeline.syntax import Hole, SpanPlan, comment_prefix, error_regions, find_holes

MAX_HOLES = 16
MAX_SELECTION_CHARS = 20_000  # Instant Edit regenerates at most this much text


@dataclass
class Edit:
    """Replace text[start:end] with `text`."""

    start: int
    end: int
    text: str


def fill_holes(
    engine: Engine,
    text: str,
    language: str | None,
    start: int = 0,
    end: int | None = None,
    cancel: threading.Event | None = None,
) -> list[Edit]:
    """Fill every hole in [start, end) in one denoising run; a hole whose fill would break
    the parse is left as it is."""
    holes = find_holes(text, language, start, end)[:MAX_HOLES]
    if not holes:
        return []
    model = engine.load()
    s = engine.settings
    # Holes are filled together only while the code between them fits the context budget;
    # the rest wait for the next invocation (a range over a huge file stays cheap).
    kept, between = holes[:1], 0
    for prev, hole in zip(holes, holes[1:], strict=False):
        between += max(1, (hole.start - prev.end) // 3)  # cheap upper bound on tokens
        if between > s.context_tokens:
            engine.log(f"fill-holes: {len(holes) - len(kept)} holes left for the next run")
            break
        kept.append(hole)
    holes = kept
    slots = sum(s.max_tokens if _inline(text, h) else s.max_block_tokens for h in holes)
    ctx = build_context(text, holes[0].start, model.encode,
                        context_budget(s, model, slots + between),
                        end=holes[-1].end, comment=comment_prefix(language))
    pieces: list[list[int] | int] = [ctx.prefix_ids]
    for i, hole in enumerate(holes):
        pieces.append(s.max_tokens if _inline(text, hole) else s.max_block_tokens)
        if i + 1 < len(holes):
            pieces.append(model.encode(text[hole.end:holes[i + 1].start]))
    pieces.append(ctx.suffix_ids)
    result, _ = engine.run(pieces, cancel, engine.sampler_config(model, candidates=1))
    spans = result.candidates[0].spans
    edits = []
    for hole, ids in zip(holes, spans, strict=True):
        raw = model.decode(ids)
        if _inline(text, hole):
            fill = first_line(raw).strip()
        else:
            if model.spec.prompt_format != "chat":  # the code after the hole's block
                raw = cut_at_dedent(raw, len(hole.indent))
            fill = reindent(raw, SpanPlan("block", hole.indent, hole.indent, ""))
        errors, baseline = insertion_checker(text, hole.start, hole.end, language, extent=True)
        kept = trim_until_parses(fill, errors, baseline, block=not _inline(text, hole))
        if kept is None:
            engine.log(f"fill-holes: no parseable fill for the {hole.kind} hole at {hole.start}")
            continue
        edits.append(Edit(hole.start, hole.end, kept))
    return edits


def _slots_to_rewrite(model: LoadedModel, old: str, max_block_tokens: int) -> int:
    """Room for a rewrite of `old`: half as many tokens again, within twice a block."""
    n = len(model.encode(old))
    return min(max(8, int(n * 1.5) + 8), 2 * max_block_tokens)


def _inline(text: str, hole: Hole) -> bool:
    """A marker with code beside it on its line is filled with a single line."""
    if hole.kind != "marker":
        return False
    ls = text.rfind("\n", 0, hole.start) + 1
    le = text.find("\n", hole.end)
    line = text[ls:len(text) if le < 0 else le]
    return bool(line.replace(text[hole.start:hole.end], "", 1).strip())


def instant_edit(
    engine: Engine,
    text: str,
    language: str | None,
    start: int,
    end: int,
    instruction: str | None = None,
    cancel: threading.Event | None = None,
) -> Edit | None:
    """Mask [start, end) and regenerate it from both sides, optionally following an
    instruction given to the model as a comment just above the selection.

    The selection's leading indentation and trailing line break stay as they are: a whole
    line selected from column 0 is rewritten after its indentation, never moved out of its
    block. The result must not make the code around it parse worse (count and extent).
    """
    if end - start > MAX_SELECTION_CHARS:
        engine.log(f"instant edit: selections over {MAX_SELECTION_CHARS} characters are refused")
        return None
    start, end = _body(text, start, end)
    if end <= start:
        return None
    model = engine.load()
    s = engine.settings
    selected = text[start:end]
    slots = _slots_to_rewrite(model, selected, s.max_block_tokens)
    budget = context_budget(s, model, slots)
    ctx = build_context(text, start, model.encode, budget, end=end,
                        comment=comment_prefix(language))
    prefix = ctx.prefix
    instruction = " ".join((instruction or "").split())  # one line, for a comment or a turn
    if instruction and model.chat_template:
        raw = _chat_reply(engine, model, language, instruction, selected, slots,
                          ctx.prefix, ctx.suffix, cancel)
    else:
        if instruction:
            cut = prefix.rfind("\n") + 1  # start of the selection's first line
            indent = prefix[cut:][: len(prefix[cut:]) - len(prefix[cut:].lstrip(" \t"))]
            note = f"{indent}{comment_prefix(language)} {instruction}\n"
            prefix = prefix[:cut] + note + prefix[cut:]
        prefix_ids = model.encode(prefix)[-budget:]
        result, _ = engine.run([prefix_ids, slots, ctx.suffix_ids], cancel)
        raw = model.decode(result.candidates[0].spans[0])
    multiline = "\n" in selected
    new = raw.strip("\r\n").rstrip().lstrip(" \t") if multiline else first_line(raw).strip()
    errors, baseline = insertion_checker(text, start, end, language, extent=True)
    kept = trim_until_parses(new, errors, baseline, block=multiline)
    return Edit(start, end, kept) if kept is not None else None


def _body(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) without what a rewrite keeps: the indentation when the selection starts
    in it, and a final line break (with the next line's indentation after it)."""
    if not text[text.rfind("\n", 0, start) + 1:start].strip(" \t"):
        while start < end and text[start] in " \t":
            start += 1
    body = text[start:end].rstrip(" \t")
    if body.endswith(("\n", "\r")):
        end = start + len(body.rstrip("\r\n"))
    return start, end


def _chat_reply(engine: Engine, model: LoadedModel, language: str | None, instruction: str,
                selected: str, slots: int, before: str, after: str,
                cancel: threading.Event | None) -> str:
    """Instant Edit for an instruct checkpoint: the request is a user turn of its chat
    template, and the new code is the reply after the assistant header, out of its fence."""
    prompt = chat_ids(model, edit_request(instruction, language, before, selected, after))
    result, _ = engine.run([prompt, slots + 8], cancel)  # room for the reply's code fence
    return unfence(model.decode(result.candidates[0].spans[0]))


def repair(
    engine: Engine,
    text: str,
    language: str | None,
    start: int,
    end: int,
    cancel: threading.Event | None = None,
) -> Edit | None:
    """Re-infill the lines of the first syntax error touching [start, end); returned only
    when the repaired lines parse."""
    regions = error_regions(text, language, start, end)
    if not regions:
        return None
    rs, re_ = regions[0]
    model = engine.load()
    s = engine.settings
    broken = text[rs:re_]
    slots = _slots_to_rewrite(model, broken, s.max_block_tokens)
    ctx = build_context(text, rs, model.encode, context_budget(s, model, slots), end=re_,
                        comment=comment_prefix(language))
    result, _ = engine.run([ctx.prefix_ids, slots, ctx.suffix_ids], cancel)
    for cand in result.candidates:
        fix = model.decode(cand.spans[0]).rstrip()
        if not fix.strip() or fix == broken:
            continue
        fixed = text[:rs] + fix + text[re_:]
        left = error_regions(fixed, language, rs, rs + len(fix))
        if not left:
            return Edit(rs, re_, fix)
    return None
