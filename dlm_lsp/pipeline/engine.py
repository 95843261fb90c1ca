"""One request from document text to ranked candidates; owns the model and the cache.

Everything here is blocking and runs on the server's single model thread. Cancellation is a
``threading.Event`` checked between denoising steps.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import FIM_TOKENS, is_autoregressive, sample_autoregressive
from dlm_lsp.model.checkpoint import (
    DlmSpec,
    LoadedModel,
    ModelError,
    load_checkpoint,
    resolve_model_path,
)
from dlm_lsp.model.recipes import Recipe, recipe_for
from dlm_lsp.model.sampler import (
    Cancelled,
    Candidate,
    Piece,
    SamplerConfig,
    SampleResult,
    fill_spans_in_turn,
    sample,
)
from dlm_lsp.pipeline.cache import LRUCache
from dlm_lsp.pipeline.chat import chat_ids, infill_request, unfence
from dlm_lsp.pipeline.context import OtherDocument, Retrieve, build_context
from dlm_lsp.pipeline.healing import healed, unheal
from dlm_lsp.pipeline.postprocess import Scored, finish_candidate, rank
from dlm_lsp.pipeline.syntax import (
    SpanPlan,
    comment_prefix,
    error_count,
    error_extent,
    line_window,
    plan_span,
)
from dlm_lsp.pipeline.typeahead import Shown, far_suffix_edit, typed_ahead

Progress = Callable[[str, int], None]  # message, percentage


@dataclass
class RunStats:
    """Figures of one model run (or cache hit)."""

    forward_passes: int
    steps: int
    tokens: int
    context_tokens: int
    ms: float
    cached: bool


@dataclass
class CompletionOutcome:
    plan: SpanPlan
    offset: int  # where the candidates are inserted
    candidates: list[Scored]
    stats: RunStats | None


class Engine:
    """Loads the model once, then serves infilling requests one at a time."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = lambda m: None):
        self.settings = settings
        self.log = log
        self.state = "idle"  # idle | loading | ready | error
        self.error: str | None = None
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()
        self._generation = 0  # bumped when the model setting changes mid-load
        self.cache: LRUCache[SampleResult] = LRUCache(256)
        self.model_runs = 0  # sampler runs that were not cache hits
        self.cancelled_passes: int | None = None  # forward passes of the last cancelled run
        self.last_stats: RunStats | None = None
        self.last_snippets: list[str] = []  # header lines of the last context's snippets
        self._shown: Shown | None = None  # the last completion, for typing ahead
        # a model learnt for the workspace (``dlm-lsp adapt``), used in place of "embedded"
        self.adapted: Path | None = None

    # -- model lifecycle ---------------------------------------------------------------
    def update_settings(self, settings: Settings) -> None:
        """Take new settings; a different model, device or quantisation is loaded on next use."""
        reload = load_key(settings) != load_key(self.settings)
        self.settings = settings
        self._shown = None  # made under the old settings
        if settings.threads:
            torch.set_num_threads(settings.threads)
        if reload:
            self._unload()

    def use_adapted(self, path: Path | None) -> None:
        """Serve `path` (an adapted model) while the model setting is "embedded"; None: the
        embedded model itself. A change loads the model again on next use."""
        if path == self.adapted:
            return
        self.adapted = path
        self._shown = None
        self._unload()

    def _unload(self) -> None:
        """Drop the model and its cache; the next use loads again. No lock: a load in
        progress must not block the event loop (its generation is stale and is dropped)."""
        self._generation += 1
        self._model, self.state, self.error = None, "idle", None
        self.cache.clear()

    def load(self, progress: Progress | None = None) -> LoadedModel:
        """The loaded model; loads it on first call. Raises ModelError with a user message."""
        with self._lock:
            if self._model is not None:
                return self._model
            self.state = "loading"
            generation, settings = self._generation, self.settings
            try:
                if progress:
                    progress(f"Resolving model {settings.model!r}", 5)
                path = (self.adapted if self.adapted is not None and settings.model ==
                        "embedded" else resolve_model_path(settings.model))
                if progress:
                    progress(f"Loading {path}", 30)
                if settings.threads:
                    torch.set_num_threads(settings.threads)
                model = load_checkpoint(path, settings.device, settings.quantize,
                                        settings.dtype, settings.family,
                                        settings.prompt_format)
                for warning in model.warnings:
                    self.log(f"dlm: {warning}")
                if progress:
                    progress("Warming up", 80)
                self._warm_up(model)
            except ModelError as exc:
                self.state, self.error = "error", str(exc)
                raise
            except Exception as exc:  # a broken file must not kill the server
                self.state, self.error = "error", f"could not load the model: {exc!r}"
                raise ModelError(self.error) from exc
            if generation == self._generation:  # else the settings changed meanwhile
                self._model, self.state, self.error = model, "ready", None
            return model

    def forget(self) -> None:
        """Drop every reusable result (the response cache and the last completion), so the
        next request is a fresh decode: for benchmarks."""
        self.cache.clear()
        self._shown = None

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def _warm_up(self, model: LoadedModel) -> None:
        ids = model.encode("def f(x):\n    return x\n")
        decode(model, [ids, 2, ids], SamplerConfig(max_steps=1))

    # -- running the sampler -------------------------------------------------------------
    def sampler_config(self, model: LoadedModel | None = None,
                       **overrides: object) -> SamplerConfig:
        """The sampler settings: the editor's fast path from the settings, or, for a
        published family (unless ``decoding`` is "fast"), its own recipe with the settings
        the user set explicitly on top."""
        s = self.settings
        cfg = SamplerConfig(
            threshold=s.confidence_threshold,
            temperature=s.temperature,
            top_p=s.top_p,
            max_steps=s.max_steps,
            candidates=s.candidates,
            remask_threshold=s.remask_threshold,
            use_cache=s.kv_cache,
            window=s.unmask_window,
            filter_threshold=model.finality.threshold
            if model is not None and model.finality is not None and s.parallel_filter else 0.0,
            lookup=s.lookup_drafts,
            copy_threshold=s.copy_threshold,
        )
        recipe = published_recipe(model, s)
        if recipe is not None:
            cfg = dataclasses.replace(
                cfg, order=recipe.order, schedule=recipe.schedule,
                temperature=s.temperature if "temperature" in s.explicit else recipe.temperature,
                top_p=s.top_p if "topP" in s.explicit else recipe.top_p,
                block_length=recipe.block_length, block_aligned=recipe.block_aligned,
                ar_block_starts=recipe.ar_block_starts, stop_at_end=recipe.stop_at_end,
                max_span=recipe.max_span, max_steps=0, use_cache=False, window=0,
                span_ends=False, filter_threshold=0.0)
        return dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]

    def mode_config(self, mode: str, model: LoadedModel, blank_line: bool = False,
                    column: int = 0, **overrides: object) -> SamplerConfig:
        """Sampler settings for a span of `mode`. A single line is done at its line break
        (the slots after it would be cut anyway) and has its own step budget. A single line,
        and a block on a blank line, may not end before the answer writes something other
        than whitespace (the prefix's own last token, written again after healing, does not
        count): the editor would not show it. A block on a blank line is whole lines: it may
        not end before a line break after content either, and (written left to right, from
        the cursor's `column`) it ends where a line starts less indented. A published recipe
        decodes as its family does, cut to the line afterwards."""
        if published_recipe(model, self.settings) is None:
            if mode == "line":
                overrides.setdefault("stop_ids", model.newline_ids)
                overrides.setdefault("max_steps", min(self.settings.max_steps,
                                                      self.settings.line_steps))
            if blank_line or mode == "line":
                overrides.setdefault("blank_ids", model.blank_ids)
            if blank_line and mode == "block":
                overrides.setdefault("line_ids", model.newline_ids)
                overrides.setdefault("block_column", column)
        return self.sampler_config(model, **overrides)

    def run(
        self,
        pieces: Sequence[Sequence[int] | int],
        cancel: threading.Event | None = None,
        cfg: SamplerConfig | None = None,
    ) -> tuple[SampleResult, RunStats]:
        """Sample `pieces` (fixed token lists and span lengths), through the cache."""
        model = self.load()
        cfg = cfg or self.sampler_config(model)
        key = (str(model.path), tuple(p if isinstance(p, int) else tuple(p) for p in pieces),
               dataclasses.astuple(cfg))
        n_ctx = sum(len(p) for p in pieces if not isinstance(p, int))
        t0 = time.perf_counter()
        hit = self.cache.get(key)
        if hit is not None:
            stats = RunStats(hit.forward_passes, hit.steps, hit.generated_tokens, n_ctx,
                             (time.perf_counter() - t0) * 1e3, cached=True)
            self.last_stats = stats
            return hit, stats
        stop = cancel.is_set if cancel else (lambda: False)
        self.model_runs += 1
        try:
            result = decode(model, pieces, cfg, stop)
        except Cancelled as exc:
            self.cancelled_passes = exc.forward_passes
            raise
        self.cache.put(key, result)
        stats = RunStats(result.forward_passes, result.steps, result.generated_tokens, n_ctx,
                         (time.perf_counter() - t0) * 1e3, cached=False)
        self.last_stats = stats
        return result, stats

    # -- completion at a cursor ----------------------------------------------------------
    def complete(
        self,
        text: str,
        offset: int,
        language: str | None,
        others: Sequence[OtherDocument] = (),
        cancel: threading.Event | None = None,
        retrieve: Retrieve | None = None,
    ) -> CompletionOutcome:
        """Ranked candidates to insert at `offset` (line or block mode, per tree-sitter).

        While the user types the start of the last completion, the rest of it is served
        without a model run (stats report 0 forward passes, cached); so is the last
        completion after an edit far below the cursor (``suffixReuseLines``).
        """
        model = self.load()
        plan = plan_span(text, offset, language)
        t0 = time.perf_counter()
        reuse = typed_ahead(self._shown, text, offset)
        if reuse is None:
            reuse = far_suffix_edit(self._shown, text, offset, self.settings.suffix_reuse_lines)
            if reuse is not None:  # later keystrokes continue from this document
                self._shown = Shown(text, offset, tuple(reuse))
        if reuse is not None:
            stats = RunStats(0, 0, 0, 0, (time.perf_counter() - t0) * 1e3, cached=True)
            self.last_stats = stats
            return CompletionOutcome(plan, offset, reuse, stats)
        slots = self.settings.max_tokens if plan.mode == "line" else self.settings.max_block_tokens
        ctx = build_context(text, offset, model.encode, context_budget(self.settings, model, slots),
                            others=others, comment=comment_prefix(language), retrieve=retrieve,
                            retrieval_share=self.settings.retrieval_share)
        self.last_snippets = [snippet.split("\n", 1)[0] for snippet in ctx.snippets]
        pieces, cfg, healing = healed(model, ctx.prefix_ids, [slots, ctx.suffix_ids],
                                      self.mode_config(plan.mode, model, plan.blank_line,
                                                       len(plan.line_prefix)))
        result, stats = self.run(pieces, cancel, cfg)
        errors, baseline = insertion_checker(text, offset, offset, language)
        scored = []
        for cand in result.candidates:
            raw = unheal(model.decode(cand.spans[0]), healing)
            done = finish_candidate(raw, plan, ctx.suffix, errors, baseline,
                                    file_indents=model.spec.prompt_format != "chat")
            if done is not None:
                scored.append(Scored(done, cand.mean_confidence))
        ranked = rank(scored)
        self._shown = Shown(text, offset, tuple(ranked)) if ranked else None
        return CompletionOutcome(plan, offset, ranked, stats)


def load_key(settings: Settings) -> tuple[object, ...]:
    """The settings that decide which model is loaded (a change means loading again)."""
    return (settings.model, settings.device, settings.dtype, settings.quantize,
            settings.backend, settings.remote)


def published_recipe(model: LoadedModel | None, settings: Settings) -> Recipe | None:
    """The family's recipe when it decodes this model, else None (the editor's fast path)."""
    if model is None or settings.decoding == "fast" or is_autoregressive(model.spec):
        return None
    return recipe_for(model.family)


def decode(model: LoadedModel, pieces: Sequence[Piece], cfg: SamplerConfig,
           should_stop: Callable[[], bool] = lambda: False) -> SampleResult:
    """Fill the spans of `pieces` with the model's own decoding: masked diffusion, or left to
    right for an autoregressive checkpoint (the AR twin), each span framed as the
    checkpoint's prompt format says (``DlmSpec.prompt_format``)."""
    if is_autoregressive(model.spec):
        return sample_autoregressive(model, pieces, cfg, should_stop)
    if model.spec.prompt_format == "chat":
        return chat_infill(model, pieces, cfg, should_stop)
    return sample(model.denoiser, model.spec, frame(model.spec, pieces), cfg,
                  should_stop=should_stop, finality=model.finality)


def frame(spec: DlmSpec, pieces: Sequence[Piece]) -> list[Piece]:
    """The pieces with the checkpoint's own first and last tokens: bos before the prompt
    (LLaDA, DreamOn) and eos after the suffix (DreamOn)."""
    out: list[Piece] = list(pieces)
    if spec.prompt_format in ("bos", "bos_eos") and spec.bos_token_id is not None:
        out = [[spec.bos_token_id], *out]
    if spec.prompt_format == "bos_eos":
        out = [*out, [spec.eos_token_id]]
    return out


def chat_infill(model: LoadedModel, pieces: Sequence[Piece], cfg: SamplerConfig,
                should_stop: Callable[[], bool]) -> SampleResult:
    """An instruct checkpoint fills each span in turn as the answer to a user turn that
    shows the code around it (``chat.infill_request``), out of the answer's code fence."""
    B = max(1, cfg.candidates)
    spans: list[list[list[int]]] = [[] for _ in range(B)]
    confs: list[list[list[float]]] = [[] for _ in range(B)]
    passes = steps = 0

    def fill(before: list[int], after: list[int], n: int) -> list[int]:
        nonlocal passes, steps
        prompt = chat_ids(model, infill_request(model.decode(before), model.decode(after)))
        result = sample(model.denoiser, model.spec, [prompt, n], cfg, should_stop=should_stop)
        passes += result.forward_passes
        steps += result.steps
        for b, cand in enumerate(result.candidates):
            text = model.decode(cand.spans[0])
            inner = unfence(text)  # re-encoded only when the answer came in a code fence
            ids = cand.spans[0] if inner == text else model.encode(inner)
            spans[b].append(ids)
            confs[b].append([cand.mean_confidence] * len(ids))
        return spans[0][-1]

    fill_spans_in_turn(pieces, fill)
    return SampleResult([Candidate(s, c) for s, c in zip(spans, confs, strict=True)],
                        passes, steps)


CHAT_OVERHEAD = 96  # tokens of a chat template and the infill request around the code


def context_budget(settings: Settings, model: LoadedModel, slots: int) -> int:
    """Context tokens for a run: the setting, within the window the model was trained on
    (an autoregressive model also needs room for its FIM sentinels, a framed prompt for
    its bos/eos, a chat prompt for its template)."""
    extra = {"bos": 1, "bos_eos": 2, "chat": CHAT_OVERHEAD}.get(model.spec.prompt_format, 0)
    sentinels = len(FIM_TOKENS) if is_autoregressive(model.spec) else extra
    room = model.spec.max_context - slots - sentinels
    return max(16, min(settings.context_tokens, room))


def insertion_checker(
    text: str, start: int, end: int, language: str | None, extent: bool = False
) -> tuple[Callable[[str], Any], Any]:
    """A function measuring syntax errors with [start, end) replaced, and the measure
    without. The measure is the error count; with `extent` (edits of existing code) it is
    (count, bytes in errors): a rewrite that breaks the code after it must not pass because
    tree-sitter folded the damage into an error that was already there."""
    lo, hi = line_window(text, start, end, before=200, after=50)
    head, tail = text[lo:start], text[end:hi]

    def errors(candidate: str) -> Any:
        window = head + candidate + tail
        count = error_count(language, window, (len(head), len(head) + len(candidate)))
        return (count, error_extent(language, window)) if extent else count

    return errors, errors(text[start:end])


__all__ = ["Cancelled", "CompletionOutcome", "Engine", "ModelError", "RunStats",
           "context_budget", "decode", "insertion_checker"]
