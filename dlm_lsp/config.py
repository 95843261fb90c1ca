"""Typed settings with their defaults, read from camelCase client options.

Unknown keys are reported and ignored; a bad value is reported and the previous value (the
default at first) is kept. Nothing here raises on user input.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class RemoteSettings:
    """Where ``backend: "remote"`` sends fill-in-the-middle requests."""

    url: str = "http://127.0.0.1:8765"
    model: str = "dlm-embedded"
    api_key_env: str = "DLM_API_KEY"  # the key is read from this environment variable
    timeout_ms: int = 10000


@dataclass(kw_only=True)
class Settings:
    """Every server setting, with the default a user gets."""

    model: str = "embedded"  # "embedded", a checkpoint directory, or a hub id in the local cache
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (CPU fp32, CUDA bf16, MPS fp16) | float32 | bfloat16 | float16
    threads: int = 0  # torch intra-op threads; 0 = torch's default (the core count)
    quantize: str = "int8"  # int8 (dynamic int8 linear layers on CPU; ignored on GPU) | none
    context_tokens: int = 512  # prefix + suffix (+ snippets) budget, in tokens
    max_tokens: int = 24  # slots for a single-line completion
    max_block_tokens: int = 96  # slots for a block (multi-line) completion or a hole
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    confidence_threshold: float = 0.9  # commit every slot this confident in one step
    max_steps: int = 32  # step budget per request (forces content slots, never ends)
    # a single line: at most this many steps; fewer than maxTokens forces several tokens a
    # step, which the embedded model pays for (answers 144 -> 85 of 200 at 8 steps)
    line_steps: int = 24
    candidates: int = 1  # n-best rows decoded together in one batch
    remask_threshold: float = 0.0  # > 0 re-masks committed tokens that lost confidence
    kv_cache: bool = True  # dual K/V cache across denoising steps
    unmask_window: int = 8  # > 0: each step decides only the first N open slots of a span
    # commit what the checkpoint's finality filter trusts (model/finality.py), when it
    # ships one, instead of the confidence threshold
    parallel_filter: bool = True
    # > 0: a step also commits the tokens that followed the last N (or fewer) written tokens
    # elsewhere in the context, where its proposals agree with them (model/drafts.py)
    lookup_drafts: int = 3
    # < 1: where such a repeat goes on, take its token if the model gives it at least this
    # probability (copy from the context rather than write the model's first choice)
    copy_threshold: float = 0.05
    # serve the last completion again after an edit below the cursor that leaves the rest of
    # its line and this many lines after it unchanged; 0 = off
    suffix_reuse_lines: int = 0
    debounce_ms: int = 40  # wait this long; a newer request for the document wins
    # read the workspace's source files into an index whose snippets join the context
    workspace_index: bool = True
    retrieval_share: float = 0.25  # of contextTokens, at most, for the workspace's snippets
    adapted: bool = True  # with model "embedded": the model `dlm-lsp adapt` learnt here
    languages: list[str] = field(default_factory=list)  # languageIds to serve; empty = all
    enabled: bool = True  # false pauses completions (the editors' toggle)
    trust_remote_code: bool = False
    backend: str = "local"  # local | remote
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    # a published checkpoint: which adapter reads it (auto = detected), its prompt (auto =
    # chat for instruct checkpoints), and its decoding: auto/published = the family's own
    # recipe (model/recipes.py; a setting set explicitly still wins), fast = the editor's
    # fast path (cache, window, threshold)
    family: str = "auto"
    prompt_format: str = "auto"  # auto | raw | chat
    decoding: str = "auto"  # auto | published | fast
    # the settings the user set (camelCase), so a family's recipe yields to them only
    explicit: set[str] = field(default_factory=set, compare=False, repr=False)


def camel(name: str) -> str:
    """snake_case -> camelCase, the spelling clients use."""
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


Check = Callable[[Any], str | None]  # returns an error message, or None if the value is fine


def _int(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"must be an integer from {lo} to {hi}"
        return None
    return check


def _float(lo: float, hi: float, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "must be a number"
        if v < lo or v > hi or (lo_open and v == lo):
            return f"must be {'>' if lo_open else '>='} {lo} and <= {hi}"
        return None
    return check


def _choice(*options: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"
    return check


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


# Environment variables whose value the server may send as a bearer key. A workspace may
# ship settings of its own, so any other name (AWS_SECRET_ACCESS_KEY...) is refused unless
# the user allows it on the command line (``--allow-api-key-env NAME``).
KEY_ENV_PREFIX = "DLM_"
allowed_key_envs: set[str] = set()


def _key_env(v: Any) -> str | None:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        return "must be the name of an environment variable"
    if v.startswith(KEY_ENV_PREFIX) or v in allowed_key_envs:
        return None
    return (f"must start with {KEY_ENV_PREFIX} (or be allowed with dlm-lsp "
            f"--allow-api-key-env {v}): the server sends its value to remote.url")


# Keys of the same section that only the editor clients read (VS Code's language client
# sends the whole section): accepted without a word.
CLIENT_ONLY = {"serverPath", "serverArgs", "serverEnv", "trace"}


def _str_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(s, str) for s in v)
    return None if ok else "must be a list of strings"


CHECKS: dict[str, Check] = {
    "model": _str,
    "device": _choice("auto", "cpu", "cuda", "mps"),
    "dtype": _choice("auto", "float32", "bfloat16", "float16"),
    "threads": _int(0, 256),
    "quantize": _choice("int8", "none"),
    "context_tokens": _int(32, 32768),
    "max_tokens": _int(1, 512),
    "max_block_tokens": _int(1, 1024),
    "temperature": _float(0.0, 2.0),
    "top_p": _float(0.0, 1.0, lo_open=True),
    "confidence_threshold": _float(0.0, 1.0, lo_open=True),
    "max_steps": _int(1, 1024),
    "line_steps": _int(1, 1024),
    "candidates": _int(1, 8),
    "remask_threshold": _float(0.0, 1.0),
    "kv_cache": _bool,
    "unmask_window": _int(0, 1024),
    "parallel_filter": _bool,
    "lookup_drafts": _int(0, 16),
    "copy_threshold": _float(0.0, 1.0),
    "suffix_reuse_lines": _int(0, 10000),
    "debounce_ms": _int(0, 5000),
    "workspace_index": _bool,
    "retrieval_share": _float(0.0, 0.9),
    "adapted": _bool,
    "languages": _str_list,
    "enabled": _bool,
    "trust_remote_code": _bool,
    "backend": _choice("local", "remote"),
    "remote.url": _str,
    "remote.model": _str,
    "remote.api_key_env": _key_env,
    "remote.timeout_ms": _int(100, 600000),
    "family": _choice("auto", "dream", "dreamon", "open-dcoder", "llada", "fast-dllm-v2"),
    "prompt_format": _choice("auto", "raw", "chat"),
    "decoding": _choice("auto", "published", "fast"),
}


def apply_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Overlay client options (camelCase or snake_case) on `base`; return messages for the user.

    ``raw`` may be the settings object itself or ``{"dlm": {...}}``.
    """
    settings = dataclasses.replace(base) if base else Settings()
    settings.remote = dataclasses.replace(settings.remote)
    settings.explicit = set(settings.explicit)
    messages: list[str] = []
    if raw is None:
        return settings, messages
    if isinstance(raw, dict) and isinstance(raw.get("dlm"), dict):
        raw = raw["dlm"]
    if not isinstance(raw, dict):
        return settings, [f"dlm settings must be an object, got {type(raw).__name__}; ignored"]
    _overlay(settings, raw, "", messages, settings.explicit)
    return settings, messages


def _overlay(target: Any, raw: dict[str, Any], prefix: str, messages: list[str],
             explicit: set[str]) -> None:
    fields = {f.name for f in dataclasses.fields(target)}
    for key, value in raw.items():
        name = snake(str(key))
        path = prefix + name
        if not prefix and key in CLIENT_ONLY:
            continue
        if name not in fields:
            messages.append(f"unknown setting dlm.{prefix}{key} ignored")
            continue
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            if isinstance(value, dict):
                _overlay(current, value, path + ".", messages, explicit)
            else:
                messages.append(f"dlm.{camel_path(path)} must be an object; kept the default")
            continue
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        error = CHECKS[path](value)
        if error:
            messages.append(f"dlm.{camel_path(path)} {error} (got {value!r}); kept {current!r}")
            continue
        setattr(target, name, value)
        # clients like VS Code send every key with its default: only a value that differs
        # from the default counts as the user's own choice
        if value != getattr(type(target)(), name):
            explicit.add(camel_path(path))


def camel_path(path: str) -> str:
    return ".".join(camel(p) for p in path.split("."))


def settings_values(settings: Settings) -> dict[str, Any]:
    """Every setting by its client name (``remote.url`` for nested ones) and value."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name == "explicit":
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                out[f"{camel(f.name)}.{camel(g.name)}"] = getattr(value, g.name)
        else:
            out[camel(f.name)] = value
    return out


def settings_schema() -> dict[str, Any]:
    """Name and default of every setting, for `doctor` and the editors' docs."""
    return settings_values(Settings())
