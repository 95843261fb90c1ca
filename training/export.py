"""Export a training run (its ``state.pt``) as a checkpoint directory the server loads.

    python -m training.export runs/dlm-eos [--out DIR]      # default: RUN/checkpoint
    python -m training.export runs/dlm-eos --embed           # into dlm_lsp/models/embedded

The directory follows docs/design.md: config.json, fp16 model.safetensors, tokenizer.json and a
dlm.json whose ``training`` block records the objective, mechanism, corpus digest, steps and
tokens, and the weights it started from by name and digest: a shipped checkpoint carries no
path of the machine it was built on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from dlm_lsp.model.checkpoint import EMBEDDED_DIR, DlmSpec, save_checkpoint
from dlm_lsp.model.denoiser import Denoiser
from training.shapes import model_config


def total_tokens(training: dict[str, Any]) -> int:
    """All tokens behind a run: its own and those of the weights it started from."""
    init = training.get("init_from") or {}
    return int(training.get("tokens") or 0) + int(init.get("tokens") or 0)


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """sha256 of the weights as an export stores them (fp16, by name; a head tied to the
    embeddings once): the same for a run's state and for the checkpoint exported from it."""
    h = hashlib.sha256()
    embed = weights.get("model.embed_tokens.weight")
    for name in sorted(weights):
        tensor = weights[name]
        if name == "lm_head.weight" and embed is not None and torch.equal(tensor, embed):
            continue
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float16).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def source_name(path: Path | str) -> str:
    """A run or checkpoint by name, without the machine's directories: ``campaign/ar`` for
    ``.../runs/campaign/ar/state.pt``, ``ar-twin`` for ``.../bench/models/ar-twin``."""
    path = Path(path)
    if path.is_file() or path.suffix == ".pt":
        return "/".join(path.parent.parts[-2:])
    return path.name


def state_facts(path: Path | str, state: dict[str, Any]) -> dict[str, Any]:
    """What a run's ``state.pt`` says of its training: name, weights digest, objective,
    steps and tokens (its starting weights' tokens included)."""
    return {"name": source_name(path), "digest": weights_digest(state["model"]),
            "objective": state.get("args", {}).get("objective"),
            "steps": state.get("step"),
            "tokens": total_tokens({"tokens": state.get("tokens"),
                                    "init_from": state.get("init_facts")})}


def checkpoint_facts(path: Path, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What an exported checkpoint directory says of its training (as :func:`state_facts`)."""
    training = json.loads((path / "dlm.json").read_text()).get("training", {})
    return {"name": source_name(path), "digest": weights_digest(weights),
            "objective": training.get("objective"), "steps": training.get("steps"),
            "tokens": total_tokens(training)}


def _init_facts(init_from: Any) -> dict[str, Any] | None:
    """What the run started from: the initial weights' name, digest, steps and tokens (they
    count towards the model's total training budget). Never a path of this machine."""
    if isinstance(init_from, dict):
        return {k: v for k, v in init_from.items() if k != "path"}
    if not init_from or str(init_from) == "None":
        return None
    if Path(init_from).is_file():
        return state_facts(init_from, torch.load(init_from, map_location="cpu",
                                                 weights_only=False))
    if Path(init_from).is_dir():
        from dlm_lsp.model.checkpoint import weight_files

        source = Path(init_from)
        weights = {k: v for f in weight_files(source) for k, v in load_file(str(f)).items()}
        return checkpoint_facts(source, weights)
    return {"name": source_name(init_from)}


def export(model: Denoiser, tokenizer: Tokenizer, target: Path, args: dict[str, Any],
           step: int, tokens: int, corpus_digest: str, shard_mib: float | None = None) -> Path:
    """Write `model` and `tokenizer` to `target` (fp16 weights, in shards of `shard_mib` if
    given) and return it."""
    t = tokenizer.token_to_id
    spec = DlmSpec(
        mask_token_id=t("<mask>"), pad_token_id=t("<pad>"), eos_token_id=t("<eos>"),
        expand_token_id=t("<expand>") if args["mechanism"] == "expand" else None,
        max_context=int(args["seq_len"]),
        languages=["python"],  # the corpus (training/corpus.py) is Python only
        logits_shift=str(args.get("logits_shift", False)) == "True",
        training={"objective": args["objective"], "mechanism": args["mechanism"],
                  "init_from": _init_facts(args.get("init_from")),
                  "corpus_digest": corpus_digest, "steps": step, "tokens": tokens,
                  "size": args["size"], "seq_len": int(args["seq_len"]),
                  "batch": int(args["batch"]),
                  # runs from before the option trained PSM rows
                  **({"fim_order": args.get("fim_order", "psm")}
                     if args["objective"] == "ar" else {})},
    )
    if target.exists():
        shutil.rmtree(target)
    save_checkpoint(target, model, tokenizer, spec, dtype=torch.float16, shard_mib=shard_mib)
    return target


def export_run(run: Path, target: Path) -> Path:
    """Rebuild the model of a run from its state file and export it to `target`."""
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=False)
    # the facts of its starting weights as the run recorded them (tokens included)
    args = {**state["args"], "init_from": state.get("init_facts") or state["args"].get("init_from")}
    tokenizer = Tokenizer.from_file(str(Path(args["data"]) / "tokenizer.json"))
    model = Denoiser(model_config(args["size"], tokenizer.get_vocab_size()))
    model.load_state_dict(state["model"])
    digest = json.loads((Path(args["corpus"]) / "manifest.json").read_text())["digest"]
    return export(model, tokenizer, target, args, state["step"], state["tokens"], digest)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--embed", action="store_true", help=f"export into {EMBEDDED_DIR}")
    args = ap.parse_args(argv)
    target = EMBEDDED_DIR if args.embed else (args.out or args.run / "checkpoint")
    print(export_run(args.run, target))


if __name__ == "__main__":
    main()
