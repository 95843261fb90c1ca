"""``dlm-lsp serve-http``: one model, many editors, behind the Mercury-shaped FIM API.

Concurrent requests are gathered for a few milliseconds (or until ``max_batch``) and decoded
together in one denoising run (``model/batching.py``), so a team shares one GPU instead of
queueing for it. The server binds to 127.0.0.1 unless told otherwise, and refuses to listen
on another address without an API key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import is_autoregressive
from dlm_lsp.model.batching import FimRequest, sample_fim_batch
from dlm_lsp.pipeline.context import build_context
from dlm_lsp.pipeline.engine import Engine, context_budget, decode
from dlm_lsp.pipeline.postprocess import cut_repeated_suffix
from dlm_lsp.serving.fim_api import Completion, FimParams, Limits, make_app

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        """One denoising run of `size` requests."""
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)


class LocalFimService:
    """The API's service on this machine: an Engine and an asyncio batcher in front of it."""

    def __init__(self, settings: Settings, model_name: str, max_batch: int = 16,
                 window_ms: float = 5.0):
        self.engine = Engine(settings, log=log.info)
        self.model_name = model_name
        self.max_batch, self.window_s = max_batch, window_ms / 1e3
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[FimParams, asyncio.Future[Completion]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the model (off the event loop) and start batching."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._batches())
        await asyncio.to_thread(self.engine.load)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def state(self) -> dict[str, Any]:
        return {"state": self.engine.state, "error": self.engine.error,
                "batches": self.stats.batches, "requests": self.stats.requests,
                "largest_batch": self.stats.largest}

    async def complete(self, params: FimParams) -> Completion:
        assert self._queue is not None, "start() first"
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self._queue.put((params, future))
        return await future

    async def _batches(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.window_s
            while len(batch) < self.max_batch:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(left, 0)))
                except TimeoutError:
                    break
            live = [(p, f) for p, f in batch if not f.done()]  # timed-out callers are gone
            if not live:
                continue
            try:
                done = await asyncio.to_thread(self.decode, [p for p, _ in live])
            except Exception as exc:  # a failed batch fails its requests, not the server
                log.exception("batch failed")
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.record(len(live))
            for (_, fut), completion in zip(live, done, strict=True):
                if not fut.done():
                    fut.set_result(completion)

    def decode(self, batch: list[FimParams]) -> list[Completion]:
        """Blocking: tokenise, decode `batch` in one run, cut each middle."""
        model = self.engine.load()
        settings = self.engine.settings
        contexts = [build_context(p.prompt + p.suffix, len(p.prompt), model.encode,
                                  context_budget(settings, model, p.max_tokens)) for p in batch]
        requests = [FimRequest(c.prefix_ids, c.suffix_ids, p.max_tokens, p.temperature)
                    for c, p in zip(contexts, batch, strict=True)]
        cfg = self.engine.sampler_config(candidates=1)
        if is_autoregressive(model.spec):  # left to right: one request at a time
            tokens = [decode(model, [r.prefix_ids, r.max_tokens, r.suffix_ids],
                             cfg).candidates[0].spans[0] for r in requests]
        else:
            tokens = [r.tokens for r in sample_fim_batch(model, requests, cfg)]
        out = []
        for toks, ctx, p in zip(tokens, contexts, batch, strict=True):
            text = cut_repeated_suffix(model.decode(toks), ctx.suffix)
            out.append(Completion(text, len(ctx.prefix_ids) + len(ctx.suffix_ids), len(toks),
                                  "length" if len(toks) >= p.max_tokens else "stop"))
        return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--model", default=None, help='checkpoint directory (default "embedded")')
    p.add_argument("--model-name", default="dlm-embedded", help="the id clients ask for")
    p.add_argument("--settings", default=None, help="JSON object of dlm settings")
    p.add_argument("--api-key-env", default="DLM_API_KEY",
                   help="environment variable holding the bearer token")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes)
    p.add_argument("--max-tokens", type=int, default=Limits.max_tokens)
    p.add_argument("--timeout-s", type=float, default=Limits.timeout_s)


def api_key(host: str, env: str) -> str | None:
    """The bearer key from `env`; SystemExit when there is none and `host` is not loopback."""
    key = os.environ.get(env) or None
    if key is None and not is_loopback(host):
        raise SystemExit(f"refusing to listen on {host} without an API key: set "
                         f"{env} (clients send it as a bearer token)")
    return key


def build(args: argparse.Namespace, settings: Settings) -> tuple[Any, LocalFimService]:
    """The Starlette app and its service; SystemExit with a message on an unsafe setup."""
    key = api_key(args.host, args.api_key_env)
    service = LocalFimService(settings, args.model_name, args.max_batch, args.batch_window_ms)
    limits = Limits(args.max_body_bytes, args.max_tokens, args.timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    return make_app(service, key, limits, lifespan), service


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    try:
        app, _ = build(args, settings)
    except SystemExit as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
