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
import dataclasses
import ipaddress
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import is_autoregressive
from dlm_lsp.model.batching import FimRequest, sample_fim_batch
from dlm_lsp.model.sampler import Cancelled
from dlm_lsp.pipeline.context import build_context
from dlm_lsp.pipeline.engine import Engine, context_budget, decode
from dlm_lsp.pipeline.healing import healed_prefix, unheal
from dlm_lsp.pipeline.postprocess import cut_repeated_suffix
from dlm_lsp.serving.connections import header_timeout_protocol
from dlm_lsp.serving.fim_api import ClientGone, Completion, FimParams, Limits, make_app
from dlm_lsp.serving.jobs import DecodeTimeout, Job, JobQueue
from dlm_lsp.serving.memory import IdleTrimmer

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
    """The API's service on this machine: an Engine behind a bounded queue (``jobs.py``)."""

    def __init__(self, settings: Settings, model_name: str, max_batch: int = 16,
                 window_ms: float = 5.0, limits: Limits | None = None,
                 max_waiting: int = 64, queue_timeout_s: float = 10.0):
        self.engine = Engine(settings, log=log.info)
        self.model_name = model_name
        self.max_batch, self.window_s = max_batch, window_ms / 1e3
        self.limits = limits or Limits()
        self.max_waiting, self.queue_timeout_s = max_waiting, queue_timeout_s
        self.stats = BatchStats()
        self.trimmer = IdleTrimmer()
        self.decoding = 0  # rows in the batch being decoded now
        self.last_forward_passes = 0  # of the last batch: a dropped row ends it early
        self.queue: JobQueue[FimParams, Completion] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start batching, and load the model (off the event loop)."""
        self.ensure_running()
        await asyncio.to_thread(self.engine.load)

    def ensure_running(self) -> None:
        """The queue and its batching task, on the running event loop (once)."""
        if self._worker is None:
            self.queue = JobQueue(self.max_waiting, self.queue_timeout_s, self.limits.timeout_s)
            self._worker = asyncio.create_task(self._batches())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def state(self) -> dict[str, Any]:
        return {"state": self.engine.state, "error": self.engine.error,
                "batches": self.stats.batches, "requests": self.stats.requests,
                "largest_batch": self.stats.largest, "decoding": self.decoding,
                "last_forward_passes": self.last_forward_passes,
                "heap_trims": self.trimmer.count,
                "waiting": len(self.queue) if self.queue is not None else 0}

    async def complete(self, params: FimParams, disconnected: asyncio.Event) -> Completion:
        self.ensure_running()
        assert self.queue is not None
        job = self.queue.submit(params, params.max_tokens, self.max_batch)
        hang_up = asyncio.create_task(disconnected.wait())
        try:
            await asyncio.wait({job.future, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server dropped the request (a proxy's hang-up)
            job.abandoned = True
            raise
        finally:
            hang_up.cancel()
        if not job.future.done():
            job.abandoned = True  # its row ends at the next step
            raise ClientGone()
        done = job.future.result()
        done.timings = job.timings()
        return done

    async def _batches(self) -> None:
        assert self.queue is not None
        while True:
            jobs = await self.queue.next_batch(self.max_batch, self.window_s)
            dropped: set[int] = set()
            gone_rows = _gone_rows(jobs, dropped)
            t0 = time.monotonic()
            self.decoding = len(jobs)
            try:
                results = await asyncio.to_thread(self.decode, [j.params for j in jobs],
                                                  gone_rows)
            finally:
                self.decoding = 0
            self.queue.record_batch(time.monotonic() - t0)
            self.stats.record(len(jobs))
            for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
                if job.future.done() or job.abandoned:
                    continue
                if i in dropped:  # ended by its time limit
                    job.future.set_exception(DecodeTimeout(self.limits.timeout_s))
                elif isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
            if not len(self.queue) and self.trimmer.due():
                await asyncio.to_thread(self.trimmer.idle)  # between batches, off the loop

    def decode(self, batch: list[FimParams], gone_rows: RowsGone | None = None,
               ) -> list[Completion | Exception]:
        """Blocking: decode `batch` in one run; if the run fails, each request alone, so that
        one bad request fails only itself."""
        try:
            return list(self._decode(batch, gone_rows))
        except Exception as exc:
            if len(batch) == 1:
                log.warning("request failed: %s", exc)
                return [exc]
        out: list[Completion | Exception] = []
        for i, params in enumerate(batch):
            alone = None if gone_rows is None else _one_row(gone_rows, i)
            out.extend(self.decode([params], alone))
        return out

    def _decode(self, batch: list[FimParams], gone_rows: RowsGone | None) -> list[Completion]:
        model = self.engine.load()
        settings = self.engine.settings
        contexts = [build_context(p.prompt + p.suffix, len(p.prompt), model.encode,
                                  context_budget(settings, model, p.max_tokens)) for p in batch]
        cfg = self.engine.sampler_config(model, candidates=1)
        # token healing per request, as on the LSP path (pipeline/healing.py)
        heals = [healed_prefix(model, c.prefix_ids, cfg) for c in contexts]
        requests = [FimRequest(prefix, c.suffix_ids, p.max_tokens, p.temperature,
                               h.first_tokens if h else ())
                    for (prefix, h), c, p in zip(heals, contexts, batch, strict=True)]
        if is_autoregressive(model.spec):  # left to right: one request at a time
            tokens = []
            for i, r in enumerate(requests):
                gone = _one_row(gone_rows, i) if gone_rows is not None else list
                row_cfg = dataclasses.replace(cfg, first_tokens=r.first_tokens)
                try:
                    tokens.append(decode(model, [r.prefix_ids, r.max_tokens, r.suffix_ids],
                                         row_cfg, lambda g=gone: bool(g())).candidates[0].spans[0])
                except Cancelled:
                    tokens.append([])
        else:
            results = sample_fim_batch(model, requests, cfg, drop_rows=gone_rows)
            tokens = [r.tokens for r in results]
            self.last_forward_passes = results[0].forward_passes
        out = []
        for toks, (_, healing), ctx, p in zip(tokens, heals, contexts, batch, strict=True):
            text = cut_repeated_suffix(unheal(model.decode(toks), healing), ctx.suffix)
            out.append(Completion(text, len(ctx.prefix_ids) + len(ctx.suffix_ids), len(toks),
                                  "length" if len(toks) >= p.max_tokens else "stop"))
        return out


RowsGone = Callable[[], Sequence[int]]


def _gone_rows(jobs: Sequence[Job[FimParams, Completion]], dropped: set[int]) -> RowsGone:
    """The rows of `jobs` whose callers are gone (called between denoising steps), noted
    in `dropped`."""
    def rows() -> list[int]:
        now = time.monotonic()
        gone = [i for i, job in enumerate(jobs) if job.gone(now)]
        dropped.update(gone)
        return gone
    return rows


def _one_row(gone_rows: RowsGone, i: int) -> RowsGone:
    """Row `i` of a batch decoded alone: [0] once the batch's row `i` is gone."""
    return lambda: [0] if i in gone_rows() else []


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
    p.add_argument("--timeout-s", type=float, default=Limits.timeout_s,
                   help="decode time limit of a request, from the start of its batch (504)")
    p.add_argument("--max-waiting", type=int, default=64,
                   help="requests that may wait for the decoder; beyond, 429 at once")
    p.add_argument("--queue-timeout-s", type=float, default=10.0,
                   help="longest wait for the decoder (429 with Retry-After beyond)")
    p.add_argument("--limit-concurrency", type=int, default=128,
                   help="open connections and requests at once (503 beyond)")
    p.add_argument("--timeout-keep-alive", type=int, default=5,
                   help="seconds an idle keep-alive connection stays open")
    p.add_argument("--header-timeout-s", type=float, default=10.0,
                   help="seconds to send a request's headers before the connection is closed")
    p.add_argument("--body-timeout-s", type=float, default=Limits.body_timeout_s,
                   help="seconds to send a request's body (408 beyond)")


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
    limits = Limits(args.max_body_bytes, args.max_tokens, args.timeout_s, args.body_timeout_s)
    service = LocalFimService(settings, args.model_name, args.max_batch, args.batch_window_ms,
                              limits, args.max_waiting, args.queue_timeout_s)

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
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                http=header_timeout_protocol(args.header_timeout_s),
                limit_concurrency=args.limit_concurrency,
                timeout_keep_alive=args.timeout_keep_alive)
    return 0
