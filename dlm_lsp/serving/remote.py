"""``backend: "remote"``: completions from a FIM HTTP server (``dlm-lsp serve-http`` or Mercury).

The remote engine is the local one with its two model-facing steps swapped: ``load`` checks
that the server answers and accepts the key, and ``run`` sends each span as a
``POST /v1/fim/completions``. Context windows, span choice, post-processing, typing ahead and
Instant Edit are shared. The server has its own tokenizer, so token budgets here are counted
with the embedded model's tokenizer (a code BPE, close enough to size windows). Several
holes are filled one after another, each seeing the ones before it filled.

Requests run in a short-lived event loop on the model thread; a cancelled LSP request
cancels the HTTP request in flight (the connection is closed), within 20 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch
from tokenizers import Tokenizer

from dlm_lsp.config import RemoteSettings, Settings
from dlm_lsp.model.checkpoint import EMBEDDED_DIR, DlmSpec, LoadedModel, ModelError
from dlm_lsp.model.sampler import (
    Cancelled,
    Candidate,
    Piece,
    SamplerConfig,
    SampleResult,
    fill_spans_in_turn,
)
from dlm_lsp.pipeline.engine import Engine, Progress, RunStats

REMOTE_CONTEXT = 32768  # a remote model's window: the contextTokens setting is the limit


class RemoteClient:
    """The FIM API over HTTP, with the user's key, a timeout and cancellation."""

    def __init__(self, remote: RemoteSettings):
        self.remote = remote
        self.base = remote.url.rstrip("/")
        if self.base.endswith("/v1"):  # accept both http://host:port and .../v1
            self.base = self.base[:-3]

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.remote.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def check(self) -> list[str]:
        """The served model ids; ModelError with a user message when unusable."""
        body = self._call("GET", "/v1/models", None, None)
        return [m.get("id") for m in body.get("data", [])]

    def fim(self, prompt: str, suffix: str, max_tokens: int, temperature: float,
            cancel: threading.Event | None = None) -> dict[str, Any]:
        """One completion: the API's JSON body."""
        return self._call("POST", "/v1/fim/completions", {
            "model": self.remote.model, "prompt": prompt, "suffix": suffix,
            "max_tokens": max_tokens, "temperature": temperature, "stream": False}, cancel)

    def _call(self, method: str, path: str, body: dict[str, Any] | None,
              cancel: threading.Event | None) -> dict[str, Any]:
        return asyncio.run(self._request(method, path, body, cancel))

    async def _request(self, method: str, path: str, body: dict[str, Any] | None,
                       cancel: threading.Event | None) -> dict[str, Any]:
        url = self.base + path
        timeout = self.remote.timeout_ms / 1e3
        async with httpx.AsyncClient(timeout=timeout) as client:
            task = asyncio.ensure_future(client.request(method, url, json=body,
                                                        headers=self.headers()))
            while not task.done():
                if cancel is not None and cancel.is_set():
                    task.cancel()  # closes the connection: the server sees the client leave
                    raise Cancelled()
                await asyncio.wait({task}, timeout=0.02)
            try:
                response = task.result()
            except httpx.TimeoutException as exc:
                raise ModelError(f"the completion server at {self.base} did not answer within "
                                 f"{self.remote.timeout_ms} ms (remote.timeoutMs)") from exc
            except httpx.HTTPError as exc:
                raise ModelError(f"cannot reach the completion server at {self.base} "
                                 f"(remote.url): {exc}. Is `dlm-lsp serve-http` running "
                                 "there?") from exc
        return self._body(response)

    def _body(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            body = {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        if response.status_code in (401, 403):
            env = self.remote.api_key_env
            where = "is not set" if not os.environ.get(env) else "was rejected"
            raise ModelError(f"the completion server at {self.base} needs an API key: the key "
                             f"in ${env} {where} (remote.apiKeyEnv)")
        if response.status_code >= 400:
            raise ModelError(f"the completion server at {self.base} answered "
                             f"{response.status_code}: {message or response.text[:200]}")
        if not isinstance(body, dict):
            raise ModelError(f"the completion server at {self.base} sent no JSON object")
        return body


def _tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(EMBEDDED_DIR / "tokenizer.json"))
    tok.encode_special_tokens = True
    return tok


class RemoteEngine(Engine):
    """An Engine whose model is a FIM server; see the module docstring."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = lambda m: None):
        super().__init__(settings, log)
        self.client = RemoteClient(settings.remote)

    def update_settings(self, settings: Settings) -> None:
        if settings.remote != self.settings.remote:
            self.client = RemoteClient(settings.remote)
            self._model, self.state, self.error = None, "idle", None
            self.cache.clear()
        super().update_settings(settings)

    def load(self, progress: Progress | None = None) -> LoadedModel:
        """A stand-in model (the tokenizer that sizes windows) once the server answers."""
        with self._lock:
            if self._model is not None:
                return self._model
            self.state = "loading"
            try:
                if progress:
                    progress(f"Connecting to {self.client.base}", 30)
                served = self.client.check()
                if served and self.settings.remote.model not in served:
                    raise ModelError(f"the completion server at {self.client.base} serves "
                                     f"{', '.join(map(str, served))}, not "
                                     f"{self.settings.remote.model!r} (remote.model)")
                spec = DlmSpec(mask_token_id=-1, pad_token_id=-1, eos_token_id=-1,
                               max_context=REMOTE_CONTEXT, training={"objective": "remote"})
                model = LoadedModel(path=Path(self.client.base), denoiser=None,  # type: ignore[arg-type]
                                    tokenizer=_tokenizer(), spec=spec,
                                    device=torch.device("cpu"))
            except ModelError as exc:
                self.state, self.error = "error", str(exc)
                raise
            self._model, self.state, self.error = model, "ready", None
            return model

    def run(self, pieces: Sequence[Piece], cancel: threading.Event | None = None,
            cfg: SamplerConfig | None = None) -> tuple[SampleResult, RunStats]:
        """Each span by one FIM request, left to right (no response cache: the server's)."""
        model = self.load()
        cfg = cfg or self.sampler_config()
        t0 = time.perf_counter()
        spans: list[list[int]] = []
        generated = prompt_tokens = 0

        def fill(before: list[int], after: list[int], n: int) -> list[int]:
            nonlocal generated, prompt_tokens
            body = self.client.fim(model.decode(before), model.decode(after), n,
                                   cfg.temperature, cancel)
            choice = (body.get("choices") or [{}])[0]
            text = choice.get("text") if isinstance(choice.get("text"), str) else ""
            usage = body.get("usage") or {}
            generated += int(usage.get("completion_tokens") or 0)
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            spans.append(model.encode(text))
            return spans[-1]

        fill_spans_in_turn(pieces, fill)
        self.model_runs += 1
        result = SampleResult([Candidate(spans, [[1.0] * len(s) for s in spans])], 0, 0)
        stats = RunStats(0, 0, generated, prompt_tokens, (time.perf_counter() - t0) * 1e3,
                         cached=False)
        self.last_stats = stats
        return result, stats


def make_engine(settings: Settings, log: Callable[[str], None] = lambda m: None) -> Engine:
    """The engine the ``backend`` setting asks for."""
    return RemoteEngine(settings, log) if settings.backend == "remote" else Engine(settings, log)
