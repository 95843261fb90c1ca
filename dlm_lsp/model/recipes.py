"""Each published family's own decoding, as its authors publish it.

When a checkpoint of a known family is loaded, its recipe gives the sampler's defaults
(ordering, schedule, temperature, top-p, blocks); a setting the user sets explicitly still
wins, and ``"decoding": "fast"`` asks for the editor's fast path instead (dual K/V cache,
an unmask window and a confidence threshold: several tokens per pass, not the published
algorithm). ``steps`` is one per slot for all of them, as each family's own examples decode
one token a step on average.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    family: str
    order: str  # confidence | entropy | margin (unmasking.py)
    schedule: str  # linear | one | p2
    temperature: float
    top_p: float
    block_length: int = 0
    block_aligned: bool = False
    ar_block_starts: bool = False
    stop_at_end: bool = False
    max_span: int = 256  # expand never grows a span past this (DreamOn's max_gen_len: 64)
    source: str = ""

    def describe(self) -> str:
        parts = [f"{self.schedule} schedule, {self.order} order",
                 f"temperature {self.temperature:g}", f"top_p {self.top_p:g}",
                 "one step per slot"]
        if self.block_length:
            parts.append(f"blocks of {self.block_length}"
                         + (" from position 0" if self.block_aligned else ""))
        return ", ".join(parts)


RECIPES: dict[str, Recipe] = {
    "dream": Recipe(
        "dream", "entropy", "linear", temperature=0.2, top_p=0.95,
        source="DiffuCoder inference_demo.py and README (steps = tokens, alg entropy, "
               "temperature 0.2-0.4, top_p 0.95); Dream generation_utils.py _sample "
               "(number_transfer_tokens = int(n_masked * (1 - s / t)))"),
    "dreamon": Recipe(
        "dreamon", "entropy", "one", temperature=0.1, top_p=0.9, max_span=64,
        source="DreamOn eval/configs/eval_infill.yaml (alg entropy, temperature 0.1, top_p "
               "0.9, one token a step) and eval/generator.py (expand, delete, eos fills "
               "right)"),
    "llada": Recipe(
        "llada", "confidence", "one", temperature=0.0, top_p=1.0, block_length=32,
        source="LLaDA generate.py (steps = gen_length, block_length 32, low_confidence "
               "remasking, temperature 0)"),
    "open-dcoder": Recipe(
        "open-dcoder", "confidence", "p2", temperature=0.5, top_p=0.95,
        source="Open-dLLM eval/eval_infill/eval_infill.py (alg p2, temperature 0.5, top_p "
               "0.95) and veomni/models/transformers/qwen2/generation_utils.py _mdm_sample"),
    "fast-dllm-v2": Recipe(
        "fast-dllm-v2", "confidence", "one", temperature=0.0, top_p=0.95, block_length=8,
        block_aligned=True, ar_block_starts=True, stop_at_end=True,
        source="Fast_dLLM_v2 modeling generate() defaults (block_size 32, small_block_size 8, "
               "threshold 1, temperature 0, stop at <|im_end|>)"),
}


def recipe_for(family: str | None) -> Recipe | None:
    return RECIPES.get(family) if family else None
