"""Infill one middle with either model, through the server's context, sampler and cuts.

Both models get the same context window (``build_context`` with the same token budget) and
the same post-processing, by mode:

- ``line``: a single line, as the server completes mid-line or on an empty line
  (``first_line``, suffix overlap, parse check);
- ``block``: several lines, as the server's block mode (suffix repeat cut, parse check);
  the first line keeps the model's own indentation, since the benchmark gives none;
- ``span``: the model's own end (random-span infilling), suffix repeat cut only.

On a blank line (the single-line and multi-line tasks' cursor), both models follow the
server's blank-line rule: no end and no line break before something other than whitespace.
Neither model is told the true middle length: both get the server's slot budget; the
diffusion model ends the span itself with an end token, the AR twin stops at ``<eos>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import is_autoregressive
from dlm_lsp.model.sampler import SamplerConfig
from dlm_lsp.pipeline.context import FimContext, Retrieve, build_context
from dlm_lsp.pipeline.engine import Engine, context_budget, insertion_checker
from dlm_lsp.pipeline.healing import Healing, healed, unheal
from dlm_lsp.pipeline.postprocess import cut_repeated_suffix, finish_candidate
from dlm_lsp.pipeline.syntax import SpanPlan, plan_span

MODES = ("line", "block", "span")


@dataclass
class Infill:
    text: str  # what goes between prefix and suffix ("" if every candidate was rejected)
    forward_passes: int
    generated_tokens: int
    ms: float
    raw: str = ""  # the model's text before the mode's cuts (for error analysis)


def slot_budgets(settings: Settings) -> dict[str, int]:
    """Tokens either model may write per mode: the server's single-line and block limits."""
    return {"line": settings.max_tokens, "block": settings.max_block_tokens,
            "span": settings.max_block_tokens}


def finish(raw: str, mode: str, text: str, offset: int, suffix: str) -> str:
    """The server's cuts for `mode` (see the module docstring)."""
    if mode == "span":
        return cut_repeated_suffix(raw, suffix)
    errors, baseline = insertion_checker(text, offset, offset, "python")
    # no block to fit under (the answer keeps the model's indentation), but a block
    # ends where the model dedents below the cursor, as in the editor
    line_prefix = plan_span(text, offset, "python").line_prefix if mode == "block" else ""
    plan = SpanPlan(mode, "", line_prefix, "")
    return finish_candidate(raw, plan, suffix, errors, baseline) or ""


class Infiller:
    """A checkpoint through the server's Engine (response cache off): the denoiser with its
    sampler, or the AR twin decoding left to right. Sampler overrides go per call."""

    def __init__(self, engine: Engine, name: str | None = None,
                 slots: dict[str, int] | None = None, heal: bool = True):
        self.engine, self.heal = engine, heal  # heal: as the server does (pipeline/healing.py)
        model = engine.load()
        self.name = name or ("ar" if is_autoregressive(model.spec) else "diffusion")
        self.slots = slots or slot_budgets(engine.settings)

    def prepare(self, text: str, offset: int, mode: str, retrieve: Retrieve | None = None,
                retrieval_share: float = 0.0, **sampler: object
                ) -> tuple[list, SamplerConfig, Healing | None, FimContext]:
        """The pieces, sampler settings, healing and context of an infill at `offset`, as
        the server builds them; with `retrieve`, project snippets take up to
        `retrieval_share` of the context budget first."""
        model = self.engine.load()
        slots = self.slots[mode]
        ctx = build_context(text, offset, model.encode,
                            context_budget(self.engine.settings, model, slots),
                            retrieve=retrieve, retrieval_share=retrieval_share)
        plan = plan_span(text, offset, "python")
        cfg = self.engine.mode_config(mode, model, plan.blank_line and mode != "span",
                                      len(plan.line_prefix), **sampler)
        pieces, healing = [ctx.prefix_ids, slots, ctx.suffix_ids], None
        if self.heal:
            pieces, cfg, healing = healed(model, ctx.prefix_ids, pieces[1:], cfg)
        return pieces, cfg, healing, ctx

    def __call__(self, text: str, offset: int, mode: str, retrieve: Retrieve | None = None,
                 retrieval_share: float = 0.0, **sampler: object) -> Infill:
        """Infill at `offset` (see :meth:`prepare`), decoded and cut as the server does."""
        model = self.engine.load()
        t0 = time.perf_counter()
        pieces, cfg, healing, ctx = self.prepare(text, offset, mode, retrieve,
                                                 retrieval_share, **sampler)
        self.engine.forget()  # every task is timed as a fresh decode
        result, stats = self.engine.run(pieces, cfg=cfg)
        raw = unheal(model.decode(result.candidates[0].spans[0]), healing)
        out = finish(raw, mode, text, offset, ctx.suffix)
        return Infill(out, stats.forward_passes, stats.tokens,
                      (time.perf_counter() - t0) * 1e3, raw)
