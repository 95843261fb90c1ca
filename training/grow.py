"""Grow a trained model into a bigger shape that computes exactly the same function.

    python -m training.grow training/campaign/archive/small/ar --size d384x8 --out runs/grown

Training a bigger model from the weights of a smaller one saves the tokens the small one
has already learnt from, if the bigger one starts where the small one is (Net2Net, Chen et
al. 2016; bert2BERT, Chen et al. 2022; the zero-initialised output projections of a new
block as in Gopher-style progressive stacking). Here:

- **wider** (hidden size, attention heads, MLP units): the new residual dimensions start at
  zero (zero embedding columns, zero output rows of every ``o_proj`` and ``down_proj``), so
  the old dimensions see what they saw; every RMSNorm weight is scaled by
  ``sqrt(d_old / d_new)``, because the mean over more (zero) dimensions shrinks the RMS by
  that factor. New heads and MLP units get the usual random init for what they read and
  zero for what they write (their ``o_proj`` / ``down_proj`` columns), so they start silent
  and learn from the first step. What old units read from the new dimensions is random
  too: it multiplies zeros at first, and it is the path by which the new dimensions get
  their first gradients. Old query heads keep their key/value group (GQA heads are
  grouped in order, so they are placed at the front of their group).
- **deeper**: new blocks are inserted evenly between the old ones with zero ``o_proj`` and
  ``down_proj``: a pre-norm residual block that writes nothing is the identity.

:func:`grow` maps a state dict; the test checks that the logits do not change.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from dlm_lsp.model.checkpoint import DlmSpec, save_checkpoint, weight_files
from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig
from training.export import checkpoint_facts
from training.shapes import init_weights, model_config

Weights = dict[str, torch.Tensor]


def layer_map(old_layers: int, new_layers: int) -> list[int | None]:
    """For each new layer, the old layer it copies, or None for an inserted identity block,
    the inserted ones spread evenly (6 -> 8: old 0 1 2, new, old 3 4 5, new)."""
    if new_layers < old_layers:
        raise ValueError("a model can only grow deeper")
    extra = new_layers - old_layers
    out: list[int | None] = []
    for i in range(old_layers):
        out.append(i)
        # after old layer i, as many new ones as spread evenly over the old depth
        due = (i + 1) * extra // old_layers - i * extra // old_layers
        out += [None] * due
    return out


def head_slots(old_heads: int, new_heads: int, kv: int) -> list[int]:
    """New index of each old query head: each group of a key/value head keeps its old heads
    first (heads are grouped in order: head h reads key/value head h // (heads / kv))."""
    old_group, new_group = old_heads // kv, new_heads // kv
    if new_heads % kv or new_group < old_group:
        raise ValueError(f"{new_heads} heads cannot hold {old_heads} in {kv} groups")
    return [(h // old_group) * new_group + h % old_group for h in range(old_heads)]


def grow(old: Weights, src: DenoiserConfig, dst: DenoiserConfig, seed: int = 0) -> Weights:
    """The weights of `dst` computing the same logits as `old` (of `src`); see the module
    docstring. Vocabulary, head size and key/value heads must not change."""
    if (src.vocab_size, src.dim_head, src.num_key_value_heads) != (
            dst.vocab_size, dst.dim_head, dst.num_key_value_heads):
        raise ValueError("vocabulary, head size and key/value heads must stay the same")
    if dst.hidden_size < src.hidden_size or dst.intermediate_size < src.intermediate_size:
        raise ValueError("a model can only grow wider")
    fresh = Denoiser(dst)
    init_weights(fresh, seed)
    new = {k: v.detach().clone().float() for k, v in fresh.state_dict().items()}
    d0, d1 = src.hidden_size, dst.hidden_size
    i0 = src.intermediate_size
    hd = src.dim_head
    norm_scale = math.sqrt(d0 / d1)
    slots = head_slots(src.num_attention_heads, dst.num_attention_heads,
                       src.num_key_value_heads)
    old_rows = torch.cat([torch.arange(s * hd, (s + 1) * hd) for s in slots])  # q heads

    def norm(name_new: str, name_old: str) -> None:
        w = torch.full((d1,), float(old[name_old].float().mean()) * norm_scale)
        w[:d0] = old[name_old].float() * norm_scale
        new[name_new] = w

    emb = torch.zeros(dst.vocab_size, d1)
    emb[:, :d0] = old["model.embed_tokens.weight"].float()
    new["model.embed_tokens.weight"] = emb
    if "lm_head.weight" in new:
        head = old.get("lm_head.weight", old["model.embed_tokens.weight"]).float()
        lm = torch.zeros(dst.vocab_size, d1)
        lm[:, :d0] = head
        new["lm_head.weight"] = lm
    norm("model.norm.weight", "model.norm.weight")
    for i, j in enumerate(layer_map(src.num_hidden_layers, dst.num_hidden_layers)):
        p = f"model.layers.{i}."
        if j is None:  # an inserted block: silent until it learns
            new[p + "self_attn.o_proj.weight"].zero_()
            new[p + "mlp.down_proj.weight"].zero_()
            for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
                new[p + n].fill_(norm_scale)
            continue
        q = f"model.layers.{j}."
        norm(p + "input_layernorm.weight", q + "input_layernorm.weight")
        norm(p + "post_attention_layernorm.weight", q + "post_attention_layernorm.weight")
        # queries: old heads at their slots, reading the old residual dimensions
        w = new[p + "self_attn.q_proj.weight"]
        w[old_rows, :d0] = old[q + "self_attn.q_proj.weight"].float()
        if q + "self_attn.q_proj.bias" in old:
            b = new[p + "self_attn.q_proj.bias"]
            b.zero_()
            b[old_rows] = old[q + "self_attn.q_proj.bias"].float()
        for kv in ("k_proj", "v_proj"):
            w = new[p + f"self_attn.{kv}.weight"]
            w[:, :d0] = old[q + f"self_attn.{kv}.weight"].float()
            if q + f"self_attn.{kv}.bias" in old:
                new[p + f"self_attn.{kv}.bias"] = old[q + f"self_attn.{kv}.bias"].float()
        o = torch.zeros(d1, dst.num_attention_heads * hd)  # new heads write nothing yet
        o[:d0, old_rows] = old[q + "self_attn.o_proj.weight"].float()
        new[p + "self_attn.o_proj.weight"] = o
        for name in ("gate_proj", "up_proj"):
            w = new[p + f"mlp.{name}.weight"]
            w[:i0, :d0] = old[q + f"mlp.{name}.weight"].float()
        down = torch.zeros(d1, dst.intermediate_size)  # new units write nothing yet
        down[:d0, :i0] = old[q + "mlp.down_proj.weight"].float()
        new[p + "mlp.down_proj.weight"] = down
    return new


def config_of(path: Path) -> DenoiserConfig:
    return DenoiserConfig.from_hf(json.loads((path / "config.json").read_text()))


def grow_checkpoint(source: Path, size: str, out: Path, seed: int = 0) -> Path:
    """Write `source` (a checkpoint directory) grown to `size` as a checkpoint at `out`,
    whose ``dlm.json`` names the source as its starting weights (their tokens count)."""
    src = config_of(source)
    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    dst = model_config(size, tok.get_vocab_size())
    old = {k: v for f in weight_files(source) for k, v in load_file(str(f)).items()}
    model = Denoiser(dst)
    model.load_state_dict(grow(old, src, dst, seed))
    spec_json = json.loads((source / "dlm.json").read_text())
    facts = checkpoint_facts(source, old)
    training = {**spec_json.get("training", {}), "size": size, "steps": 0, "tokens": 0,
                "grown_from": facts, "init_from": facts}
    spec = DlmSpec(**{**{k: v for k, v in spec_json.items() if k != "training"},
                      "training": training})
    if out.exists():
        shutil.rmtree(out)
    save_checkpoint(out, model, tok, spec, dtype=torch.float32)
    return out


def main(argv: list[str] | None = None) -> None:
    from training.shapes import SIZES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="a checkpoint directory")
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(grow_checkpoint(args.source, args.size, args.out, args.seed))


if __name__ == "__main__":
    main()
