"""Checkpoint directories (see DESIGN.md): find, load and save them.

A checkpoint is ``config.json`` (transformers backbone config), ``model.safetensors``,
``tokenizer.json`` and ``dlm.json`` (the diffusion facts: mask/pad/eos/expand ids, whether
logits are shifted). Only safetensors are read, so loading never runs code.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "models" / "embedded"

HOW_TO_POINT = (
    'Set the "model" setting (initializationOptions or the "dlm" configuration section, '
    "or --model on the command line) to a checkpoint directory holding config.json, "
    "model.safetensors, tokenizer.json and dlm.json."
)


class ModelError(Exception):
    """A model that cannot be found or loaded; the message is meant for the user."""


@dataclass
class DlmSpec:
    """The diffusion facts of a checkpoint (``dlm.json``)."""

    mask_token_id: int
    pad_token_id: int
    eos_token_id: int
    expand_token_id: int | None = None  # DreamOn-style: one slot becomes two masks
    logits_shift: bool = False  # AR-adapted models predict token i from position i-1
    max_context: int = 2048
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DlmSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = {"mask_token_id", "pad_token_id", "eos_token_id"} - known.keys()
        if missing:
            raise ModelError(f"dlm.json lacks {', '.join(sorted(missing))}")
        return cls(**known)


@dataclass
class LoadedModel:
    """A denoiser ready to sample, with its tokenizer and diffusion facts."""

    path: Path
    denoiser: Denoiser
    tokenizer: Tokenizer
    spec: DlmSpec
    device: torch.device

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @cached_property
    def newline_ids(self) -> tuple[int, ...]:
        """Ids of the tokens whose text holds a line break (they end a single-line span)."""
        vocab = self.tokenizer.get_vocab_size()
        special = self.special_ids
        return tuple(i for i in range(vocab)
                     if i not in special and "\n" in self.tokenizer.decode([i]))

    @property
    def special_ids(self) -> set[int]:
        s = self.spec
        return {i for i in (s.mask_token_id, s.pad_token_id, s.eos_token_id, s.expand_token_id)
                if i is not None}


def embedded_available() -> bool:
    """Whether the shipped default checkpoint is present in the package."""
    return (EMBEDDED_DIR / "config.json").is_file() and (EMBEDDED_DIR / "dlm.json").is_file()


def _hub_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    dirs.append(hf_home / "hub")
    return dirs


def _from_hub_cache(repo_id: str) -> Path | None:
    """The snapshot of `repo_id` in the local hub cache, without any network access."""
    for cache in _hub_cache_dirs():
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        ref = repo / "refs" / "main"
        if ref.is_file():
            snap = repo / "snapshots" / ref.read_text().strip()
            if snap.is_dir():
                return snap
        snaps = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
        if snaps:
            return snaps[-1]
    return None


def resolve_model_path(model: str) -> Path:
    """Turn the ``model`` setting into a checkpoint directory, or raise ModelError."""
    if model == "embedded":
        if not embedded_available():
            raise ModelError(
                "The embedded default model is not in this install yet "
                f"({EMBEDDED_DIR} has no checkpoint). " + HOW_TO_POINT
            )
        return EMBEDDED_DIR
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        snap = _from_hub_cache(model)
        if snap is not None:
            return snap
        raise ModelError(f"{model!r} is not in the local hub cache (nothing is downloaded). "
                         + HOW_TO_POINT)
    raise ModelError(f"Model directory {model!r} does not exist. " + HOW_TO_POINT)


def pick_device(setting: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable device is an error."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelError('device "cuda" was asked for but torch sees no CUDA device')
    if setting == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ModelError('device "mps" was asked for but is not available')
    return torch.device(setting)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    single = path / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(load_file(path / shard))
        return weights
    raise ModelError(f"{path} has no model.safetensors (only safetensors are loaded)")


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedModel:
    """Load a checkpoint directory; fp16/bf16 weights are upcast to fp32 on CPU."""
    for name in ("config.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise ModelError(f"{path} is not a checkpoint directory: {name} is missing")
    if not (path / "dlm.json").is_file():
        raise ModelError(
            f"{path} has no dlm.json, so its mask token and length handling are unknown. "
            "Add a dlm.json as described in DESIGN.md."
        )
    hf_config = json.loads((path / "config.json").read_text())
    if hf_config.get("model_type") not in ("qwen2", "llama"):
        raise ModelError(f"unsupported backbone model_type {hf_config.get('model_type')!r}")
    spec = DlmSpec.from_json(json.loads((path / "dlm.json").read_text()))
    cfg = DenoiserConfig.from_hf(hf_config)
    dev = pick_device(device)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    model = Denoiser(cfg)
    weights = _read_weights(path)
    if cfg.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if cfg.tie_word_embeddings:  # the output layer is the embedding matrix
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise ModelError(
            f"weights do not match config.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model = model.to(device=dev, dtype=dtype).eval()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    # "<mask>" typed in a buffer is text, not the mask token the sampler fills.
    tokenizer.encode_special_tokens = True
    if spec.mask_token_id >= cfg.vocab_size:
        raise ModelError(f"mask_token_id {spec.mask_token_id} is outside the vocabulary")
    return LoadedModel(path=path, denoiser=model, tokenizer=tokenizer, spec=spec, device=dev)


def save_checkpoint(
    path: Path,
    model: Denoiser,
    tokenizer: Tokenizer,
    spec: DlmSpec,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write a checkpoint directory that :func:`load_checkpoint` reads."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.cfg.to_hf(), indent=2))
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "mask_token": tokenizer.id_to_token(spec.mask_token_id),
        "pad_token": tokenizer.id_to_token(spec.pad_token_id),
        "eos_token": tokenizer.id_to_token(spec.eos_token_id),
    }, indent=2))
    (path / "dlm.json").write_text(json.dumps(asdict(spec), indent=2))
