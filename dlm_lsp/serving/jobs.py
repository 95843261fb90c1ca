"""The FIM server's request queue: bounded waiting, batches of like requests, and rows whose
callers are gone.

- A request is refused at once (``QueueFull``, HTTP 429 with Retry-After) when
  ``max_waiting`` requests already wait, or when the wait it would have (the rest of the
  running batch and the batches queued before it, at the measured decode time per batch)
  already exceeds ``queue_timeout_s``. One that was queued and has not started when
  ``queue_timeout_s`` runs out is answered then (``QueueTimeout``), by a timer on the event
  loop, whatever the decoder is doing: an overloaded server says so within the time it
  promised instead of after the batch in its way.
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
    """Too many requests wait already, or the wait would exceed the queue's time limit;
    `retry_after` seconds is a fair wait."""

    def __init__(self, waiting: int, retry_after: int, expected_wait_s: float | None = None):
        why = (f"{waiting} requests are waiting" if expected_wait_s is None else
               f"the decoder is busy for about {expected_wait_s:.1f} s")
        super().__init__(f"{why}; retry in {retry_after} s")
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
    timer: asyncio.TimerHandle | None = None  # answers QueueTimeout if it has not started

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
        self.batch_s: float | None = None  # running mean of a batch's decode time (measured)
        self.running_since: float | None = None  # start of the batch being decoded

    def __len__(self) -> int:
        return len(self._waiting)

    def expected_wait(self, max_batch: int, ahead: int | None = None) -> float:
        """Seconds until a request with `ahead` requests queued before it (default: all of
        them) would start: the rest of the running batch, then one batch per `max_batch`
        queued before it, at the measured time per batch (0 before the first is measured)."""
        if self.batch_s is None:
            return 0.0
        ahead = len(self._waiting) if ahead is None else ahead
        rest = 0.0
        if self.running_since is not None:  # a batch that overran its mean ends "soon"
            rest = max(0.1 * self.batch_s, self.batch_s - (time.monotonic() - self.running_since))
        return rest + (ahead // max(1, max_batch)) * self.batch_s

    def retry_after(self, max_batch: int) -> int:
        """Whole seconds until the work queued now is decoded (at least 1)."""
        per_batch = self.batch_s if self.batch_s is not None else 1.0
        wait = self.expected_wait(max_batch) if self.batch_s is not None else 0.0
        return max(1, math.ceil(wait + per_batch))

    def submit(self, params: P, max_tokens: int, max_batch: int) -> Job[P, R]:
        """Queue a request, or raise QueueFull when it could not start in time."""
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(len(self._waiting), self.retry_after(max_batch))
        wait = self.expected_wait(max_batch)
        if wait > self.queue_timeout_s:
            raise QueueFull(len(self._waiting), self.retry_after(max_batch), wait)
        loop = asyncio.get_running_loop()
        job: Job[P, R] = Job(params, max_tokens, loop.create_future())
        job.timer = loop.call_later(self.queue_timeout_s, self._time_out, job, max_batch)
        self._waiting.append(job)
        self._arrived.set()
        return job

    def _time_out(self, job: Job[P, R], max_batch: int) -> None:
        """The timer of a request still waiting when its time ran out: answered now."""
        if job.started is not None or job not in self._waiting:
            return
        self._waiting.remove(job)
        if not job.future.done():
            job.future.set_exception(QueueTimeout(time.monotonic() - job.enqueued,
                                                  self.retry_after(max_batch)))

    def _expire(self, max_batch: int) -> None:
        """Drop the requests whose caller left, and answer any that outwaited its timer."""
        now = time.monotonic()
        keep: deque[Job[P, R]] = deque()
        for job in self._waiting:
            if job.gone(now):
                if job.timer is not None:
                    job.timer.cancel()
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
            if job.timer is not None:
                job.timer.cancel()
        self.running_since = now
        return batch

    def record_batch(self, seconds: float) -> None:
        """A batch's decode time, measured: the running mean behind the expected wait."""
        self.running_since = None
        self.batch_s = seconds if self.batch_s is None else 0.8 * self.batch_s + 0.2 * seconds
