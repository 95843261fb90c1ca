"""Decoding for block-diffusion checkpoints (Fast-dLLM v2): causal across blocks.

A block-diffusion model sees its own block both ways and only the blocks before it, so a
span cannot see the code after it in the buffer. Each span is decoded after a Qwen2.5 FIM
prompt (``<|fim_prefix|> P <|fim_suffix|> S <|fim_middle|>``) that puts the suffix before
it, by the same sampler as every other checkpoint; the denoiser applies the block-causal
attention (``DenoiserConfig.block_size``) and the unmask window never reaches past the
block being written, as in Fast-dLLM v2's block-by-block generation. Spans are filled in
turn, left to right, like the AR twin's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from dlm_lsp.model.checkpoint import LoadedModel
from dlm_lsp.model.sampler import (
    Candidate,
    Piece,
    SamplerConfig,
    SampleResult,
    fill_spans_in_turn,
    sample,
)


def is_block_diffusion(model: LoadedModel) -> bool:
    return model.spec.block_size > 0


def sample_blocks(
    model: LoadedModel,
    pieces: Sequence[Piece],
    cfg: SamplerConfig,
    should_stop: Callable[[], bool] = lambda: False,
) -> SampleResult:
    """Fill every span of `pieces` in turn after a FIM prompt; the sampler's result shape."""
    spec = model.spec
    if not spec.fim_token_ids:
        raise ValueError(f"{model.path}: a block-diffusion checkpoint needs FIM sentinels")
    fp, fs, fm = spec.fim_token_ids
    window = min(cfg.window, spec.block_size) if cfg.window > 0 else spec.block_size
    cfg = dataclasses.replace(cfg, window=window)
    B = max(1, cfg.candidates)
    rows: list[list[list[int]]] = [[] for _ in range(B)]
    confs: list[list[list[float]]] = [[] for _ in range(B)]
    passes = steps = 0
    history: list[int] = []

    def fill(before: list[int], after: list[int], n: int) -> list[int]:
        nonlocal passes, steps
        prompt = [fp, *before, fs, *after, fm]
        result = sample(model.denoiser, spec, [prompt, n], cfg, should_stop=should_stop)
        passes += result.forward_passes
        steps += result.steps
        history.extend(result.history)
        for b, cand in enumerate(result.candidates):
            rows[b].append(cand.spans[0])
            confs[b].append(cand.confidences[0])
        return result.candidates[0].spans[0]

    fill_spans_in_turn(pieces, fill)
    return SampleResult([Candidate(s, c) for s, c in zip(rows, confs, strict=True)],
                        passes, steps, history)
