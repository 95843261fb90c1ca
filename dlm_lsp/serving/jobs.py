"""The FIM server's request queue: bounded waiting, batches of like requests, and rows whose
callers are gone.

- A request is refused at once (``QueueFull``, HTTP 429 with Retry-After) when
  ``max_waiting`` requests already wait, and dropped (``QueueTimeout``) after waiting
  ``queue_timeout_s``: an overloaded server says so quickly instead of timing out later.
- A batch takes the oldest request and others of the same token budget bucket (powers of
  two), so one 512-token request does not hold a batch of 16-token ones.
- The decode time limit starts when a request's batch starts. A request whose caller hung up
  or whose limit passed is *gone*: its row ends at the next denoising step.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


class QueueFull(Exception):
    """Too many requests wait already; `retry_after` seconds is a fair wait."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} requests are waiting; retry in {retry_after} s")
        self.retry_after = retry_after


class QueueTimeout(Exception):
    def __init__(self, waited_s: float, retry_after: int):
        super().__init__(f"waited {waited_s:.1f} s in the queue without a free decoder")
        self.retry_after = retry_after


class DecodeTimeout(Exception):
    def __init__(self, limit_s: float):
        super().__init__(f"no answer within {limit_s:g} s of decoding")


def bucket(max_tokens: int) -> int:
    """Requests batch together when their budgets round up to the same power of two."""
    return 1 << max(0, math.ceil(math.log2(max(1, max_tokens))))


@dataclass
class Job(Generic[P, R]):
    params: P
    max_tokens: int
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    deadline: float | None = None  # decode deadline, from the start of its batch
    abandoned: bool = False  # the caller hung up

    def gone(self, now: float | None = None) -> bool:
        """The caller will not read this row's answer (hung up, or its time is up)."""
        now = time.monotonic() if now is None else now
        return self.abandoned or self.future.done() or (
            self.deadline is not None and now > self.deadline)

    def timings(self) -> dict[str, float]:
        started = self.started or time.monotonic()
        return {"queue_ms": round((started - self.enqueued) * 1e3, 1),
                "decode_ms": round((time.monotonic() - started) * 1e3, 1)}


class JobQueue(Generic[P, R]):
    """Requests waiting for the decoder, oldest first."""

    def __init__(self, max_waiting: int = 64, queue_timeout_s: float = 10.0,
                 decode_timeout_s: float = 30.0):
        self.max_waiting, self.queue_timeout_s = max_waiting, queue_timeout_s
        self.decode_timeout_s = decode_timeout_s
        self._waiting: deque[Job[P, R]] = deque()
        self._arrived = asyncio.Event()
        self.batch_s = 1.0  # running mean of a batch's decode time, for Retry-After

    def __len__(self) -> int:
        return len(self._waiting)

    def retry_after(self, max_batch: int) -> int:
        batches_ahead = len(self._waiting) / max(1, max_batch) + 1
        return max(1, math.ceil(self.batch_s * batches_ahead))

    def submit(self, params: P, max_tokens: int, max_batch: int) -> Job[P, R]:
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(len(self._waiting), self.retry_after(max_batch))
        job: Job[P, R] = Job(params, max_tokens, asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self._arrived.set()
        return job

    def _expire(self, max_batch: int) -> None:
        """Answer and drop the requests that waited too long or whose caller left."""
        now = time.monotonic()
        keep: deque[Job[P, R]] = deque()
        for job in self._waiting:
            if job.gone(now):
                continue
            if now - job.enqueued > self.queue_timeout_s:
                job.future.set_exception(QueueTimeout(now - job.enqueued,
                                                      self.retry_after(max_batch)))
                continue
            keep.append(job)
        self._waiting = keep

    async def next_batch(self, max_batch: int, window_s: float) -> list[Job[P, R]]:
        """The oldest live request and up to `max_batch` - 1 others of its bucket, gathered
        for at most `window_s` after the first arrives."""
        while True:
            self._expire(max_batch)
            if self._waiting:
                break
            self._arrived.clear()
            await self._arrived.wait()
        key = bucket(self._waiting[0].max_tokens)
        deadline = time.monotonic() + window_s
        while True:
            same = [j for j in self._waiting if bucket(j.max_tokens) == key]
            left = deadline - time.monotonic()
            if len(same) >= max_batch or left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass
            self._expire(max_batch)
            if not self._waiting:
                return await self.next_batch(max_batch, window_s)
        batch = [j for j in self._waiting if bucket(j.max_tokens) == key][:max_batch]
        chosen = {id(j) for j in batch}
        self._waiting = deque(j for j in self._waiting if id(j) not in chosen)
        now = time.monotonic()
        for job in batch:
            job.started, job.deadline = now, now + self.decode_timeout_s
        return batch

    def record_batch(self, seconds: float) -> None:
        self.batch_s = 0.8 * self.batch_s + 0.2 * seconds
