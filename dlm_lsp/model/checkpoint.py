"""Checkpoint directories (docs/design.md): find, load and save them.

A checkpoint is ``config.json`` (transformers backbone config), ``model.safetensors``,
``tokenizer.json`` and ``dlm.json`` (the diffusion facts: mask/pad/eos/expand ids, whether
logits are shifted). A published checkpoint without ``dlm.json`` (Dream, DiffuCoder, LLaDA,
...) is read through its family's adapter (``families.py``). Only safetensors are read, so
loading never runs code.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig
from dlm_lsp.model.errors import ModelError, NotDownloaded
from dlm_lsp.model.finality import FinalityFilter

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "models" / "embedded"

HOW_TO_POINT = (
    'Set the "model" setting (initializationOptions or the "dlm" configuration section, '
    "or --model on the command line) to a checkpoint directory holding config.json, "
    "model.safetensors, tokenizer.json and dlm.json."
)


@dataclass
class DlmSpec:
    """The diffusion facts of a checkpoint (``dlm.json``)."""

    mask_token_id: int
    pad_token_id: int
    eos_token_id: int
    expand_token_id: int | None = None  # DreamOn-style: one slot becomes two masks
    delete_token_id: int | None = None  # DreamOn: removes its slot; then no token ends a span
    logits_shift: bool = False  # AR-adapted models predict token i from position i-1
    block_size: int = 0  # > 0: block diffusion, causal across blocks of this many positions
    bos_token_id: int | None = None
    end_token_ids: list[int] = field(default_factory=list)  # more ends: <|im_end|>, <|eot_id|>
    # how a span is framed: raw (prefix, slots, suffix), bos (+ bos first), bos_eos (+ eos
    # last; DreamOn), chat (a user turn of the chat template, slots as the answer)
    prompt_format: str = "raw"
    max_context: int = 2048
    # the languages (our language keys, syntax.LANGUAGES) the model was trained on; empty:
    # all (published checkpoints). Other files get no completion, and the user is told.
    languages: list[str] = field(default_factory=list)
    # a learned finality filter (model/finality.py): {"file", "threshold"}; empty: none
    finality: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # field -> where its value came from

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
    chat_template: str | None = None  # instruct checkpoints: used for Instant Edit
    bos_token: str = ""  # what the chat template puts first, when it asks for bos_token
    family: str | None = None  # the adapter that read a checkpoint without dlm.json
    warnings: list[str] = field(default_factory=list)  # what loads but not as published
    finality: FinalityFilter | None = None  # shipped with the checkpoint, if any

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @cached_property
    def token_texts(self) -> tuple[str, ...]:
        """Each id's text, decoded once ("" for the diffusion specials)."""
        special = self.special_ids
        return tuple("" if i in special else self.tokenizer.decode([i])
                     for i in range(self.tokenizer.get_vocab_size()))

    @cached_property
    def texts_in_order(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The token texts sorted, with their ids: the tokens that start with a given text
        are one run of it (token healing looks them up per request)."""
        pairs = sorted((text, i) for i, text in enumerate(self.token_texts))
        return tuple(t for t, _ in pairs), tuple(i for _, i in pairs)

    @cached_property
    def newline_ids(self) -> tuple[int, ...]:
        """Ids of the tokens whose text holds a line break (they end a single-line span)."""
        return tuple(i for i, text in enumerate(self.token_texts) if "\n" in text)

    @cached_property
    def blank_ids(self) -> tuple[int, ...]:
        """Ids of the tokens whose text is only whitespace (indentation, line breaks)."""
        return tuple(i for i, text in enumerate(self.token_texts) if text and not text.strip())

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
        raise NotDownloaded(model)
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


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's safetensors files: ``model.safetensors``, or the shards its index
    names, each confined to the checkpoint directory (an index cannot point elsewhere)."""
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file() or not index.is_file():
        return [single]
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{index} is not a safetensors index: {exc}") from exc
    root = path.resolve()
    files = []
    for name in names:
        shard = (path / str(name)).resolve()
        if not isinstance(name, str) or shard.parent != root or not name.endswith(".safetensors"):
            raise ModelError(f"{index} names a shard outside the checkpoint directory: {name!r}")
        files.append(shard)
    return files


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    files = weight_files(path)
    if not all(f.is_file() for f in files):
        missing = ", ".join(f.name for f in files if not f.is_file())
        raise ModelError(f"{path} lacks {missing} (only safetensors are loaded)")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    return weights


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``auto``: fp32 on CPU (bf16 matmuls are slow there), bf16 on CUDA, fp16 on MPS."""
    if setting != "auto":
        return DTYPES[setting]
    return {"cpu": torch.float32, "mps": torch.float16}.get(device.type, torch.bfloat16)


def free_memory(device: torch.device) -> int | None:
    """Bytes the device can still take, or None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(n_params: int, dtype: torch.dtype, device: torch.device,
               free: int | None) -> None:
    """ModelError when the weights alone would not fit in the device's free memory."""
    need = n_params * torch.finfo(dtype).bits // 8
    if free is not None and need > 0.95 * free:
        raise ModelError(
            f"the model needs {need / 2**30:.1f} GiB for its weights in {str(dtype)[6:]} but "
            f"{device.type} has {free / 2**30:.1f} GiB free. Pick a smaller checkpoint, "
            'a smaller "dtype" (bfloat16/float16), or another "device".')


def _count_stored(path: Path) -> int:
    """Parameters stored in the checkpoint's safetensors, read from their headers only."""
    from safetensors import safe_open

    total = 0
    for f in weight_files(path):
        if f.is_file():
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():  # noqa: SIM118 (safe_open is not a dict)
                    total += math.prod(st.get_slice(key).get_shape())
    return total


def load_checkpoint(path: Path, device: str = "cpu", quantize: str = "none",
                    dtype: str = "auto", family_setting: str = "auto",
                    prompt_format: str = "auto") -> LoadedModel:
    """Load a checkpoint directory (or a published family's, through its adapter).

    Weights are cast to `dtype` (``auto``: fp32 on CPU, bf16 on CUDA) as they are placed on
    the device; a checkpoint that cannot fit in the device's free memory is refused with a
    clear message before anything is read. ``quantize="int8"`` swaps the linear layers for
    dynamic int8 ones on CPU (weights int8, activations quantised per call); on other
    devices it is ignored.
    """
    from dlm_lsp.model import families

    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a checkpoint directory: config.json is missing")
    hf_config = json.loads((path / "config.json").read_text())
    tok_cfg = families.read_json(path / "tokenizer_config.json")
    tokenizer = families.load_tokenizer(path, tok_cfg)
    # detection also sees the tokens tokenizer.json adds (not only tokenizer_config.json's)
    tok_cfg = {**tok_cfg, "tokenizer_added": sorted(
        t.content for t in tokenizer.get_added_tokens_decoder().values())}
    family = None
    if (path / "dlm.json").is_file():
        spec = DlmSpec.from_json(json.loads((path / "dlm.json").read_text()))
        if hf_config.get("model_type") not in ("qwen2", "llama"):
            raise ModelError(f"unsupported backbone model_type {hf_config.get('model_type')!r}")
    else:
        family = _pick_family(path, hf_config, tok_cfg, family_setting)
        chat = (families.is_chat_checkpoint(path, tok_cfg) if prompt_format == "auto"
                else prompt_format == "chat")
        spec = DlmSpec.from_json(families.spec_fields(
            family, hf_config, tokenizer, tok_cfg,
            families.read_json(path / "generation_config.json"), chat))
        hf_config = families.backbone_config(family, hf_config)
    cfg = DenoiserConfig.from_hf(hf_config)
    warnings = cfg.rope_warnings()
    cfg.block_size = spec.block_size
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    check_fits(_count_stored(path), dt, dev, free_memory(dev))
    weights = _read_weights(path)
    if family is not None:
        weights = families.rename_weights(family, weights)
    try:
        model = _build(cfg, weights, dev, dt)
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"out of {dev.type} memory while loading {path}: pick a smaller "
                         'checkpoint, "dtype", or another "device"') from exc
    if quantize == "int8" and dev.type == "cpu":
        model = quantize_int8(model)
    # "<mask>" typed in a buffer is text, not the mask token the sampler fills.
    tokenizer.encode_special_tokens = True
    if spec.mask_token_id >= cfg.vocab_size:
        raise ModelError(f"mask_token_id {spec.mask_token_id} is outside the vocabulary")
    return LoadedModel(path=path, denoiser=model, tokenizer=tokenizer, spec=spec, device=dev,
                       chat_template=families.chat_template(path, tok_cfg),
                       bos_token=families.bos_token(tok_cfg),
                       family=family.name if family else None, warnings=warnings,
                       finality=_finality(path, spec, dev))


def _finality(path: Path, spec: DlmSpec, dev: torch.device) -> FinalityFilter | None:
    """The finality filter dlm.json names, or None; a missing or broken file is an error
    the user sees (the checkpoint says it has one)."""
    if not spec.finality:
        return None
    name = str(spec.finality.get("file", ""))
    target = (path / name).resolve()
    if not name or path.resolve() not in target.parents or not target.is_file():
        raise ModelError(f"dlm.json names a finality filter {name!r} that {path} lacks")
    try:
        return FinalityFilter.load(target, float(spec.finality.get("threshold", 0.9))).to(dev)
    except Exception as exc:
        raise ModelError(f"{target} is not a finality filter: {exc}") from exc


def _pick_family(path: Path, hf_config: dict[str, Any], tok_cfg: dict[str, Any],
                 setting: str) -> Any:
    """The adapter for a checkpoint without dlm.json: the `family` setting when it names
    one, else detection; an unknown layout is refused with what is missing."""
    from dlm_lsp.model import families

    names = ", ".join(f.name for f in families.FAMILIES)
    if setting != "auto":
        if setting not in {f.name for f in families.FAMILIES}:
            raise ModelError(f'family "{setting}" is not one of {names}')
        return families.by_name(setting)
    family = families.detect(hf_config, tok_cfg)
    if family is None:
        hint = (" It ships its own model code (auto_map), which dlm-lsp does not run."
                if hf_config.get("auto_map") else "")
        raise ModelError(
            f"{path} has no dlm.json and is not a known diffusion family ({names}): "
            f"model_type {hf_config.get('model_type')!r}, architectures "
            f"{hf_config.get('architectures')}, no mask token in its tokenizer config, so "
            f"its mask token and length handling are unknown.{hint} Set the \"family\" "
            "setting if it is one of these, or add a dlm.json (docs/design.md).")
    return family


def _build(cfg: DenoiserConfig, weights: dict[str, torch.Tensor], dev: torch.device,
           dtype: torch.dtype) -> Denoiser:
    """The denoiser with `weights` cast straight onto the device: no fp32 copy of a model
    that runs in bf16, and one tensor converted at a time."""
    with torch.device("meta"):
        model = Denoiser(cfg)
    if cfg.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    state = {}
    for key in list(weights):
        state[key] = weights.pop(key).to(device=dev, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:  # the output layer is the embedding matrix
        model.lm_head.weight = model.model.embed_tokens.weight
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise ModelError(
            f"weights do not match config.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.init_rope(dev)
    return model.eval()


def quantize_int8(model: Denoiser) -> Denoiser:
    """Dynamic int8 quantisation of every ``nn.Linear`` (inference only, CPU). If this torch
    build cannot, the fp32 model is kept and a warning logged: slower, never broken."""
    import warnings

    try:
        with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                          dtype=torch.qint8)
    except Exception as exc:  # e.g. a build without a quantised engine
        logging.getLogger(__name__).warning("int8 quantisation unavailable (%r); fp32", exc)
        return model


def split_weights(state: dict[str, torch.Tensor],
                  shard_mib: float) -> list[dict[str, torch.Tensor]]:
    """`state` in order, cut into groups of at most `shard_mib` each (a larger tensor alone)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        n = tensor.numel() * tensor.element_size()
        if shards[-1] and size + n > shard_mib * 2**20:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += n
    return shards


def _save_weights(path: Path, state: dict[str, torch.Tensor], shard_mib: float | None) -> None:
    if shard_mib is None:
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    shards = split_weights(state, shard_mib)
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, shard in zip(files, shards, strict=True):
        save_file(shard, str(path / file), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in state.values())
    weight_map = {name: file for file, shard in zip(files, shards, strict=True) for name in shard}
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def save_checkpoint(
    path: Path,
    model: Denoiser,
    tokenizer: Tokenizer,
    spec: DlmSpec,
    dtype: torch.dtype = torch.float16,
    shard_mib: float | None = None,
) -> None:
    """Write a checkpoint directory that :func:`load_checkpoint` reads; with `shard_mib`, the
    weights go to shards of at most that size plus a ``model.safetensors.index.json``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.cfg.to_hf(), indent=2))
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    _save_weights(path, state, shard_mib)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "mask_token": tokenizer.id_to_token(spec.mask_token_id),
        "pad_token": tokenizer.id_to_token(spec.pad_token_id),
        "eos_token": tokenizer.id_to_token(spec.eos_token_id),
    }, indent=2))
    (path / "dlm.json").write_text(json.dumps(asdict(spec), indent=2))
