"""Debounce and supersede: of a burst of requests for one document, only the newest runs.

Each request takes a ticket for its key (document uri and request kind). A newer ticket for
the same key, an edit of the document, or ``$/cancelRequest`` sets the older ticket's
cancel event; the model thread checks it before starting and between denoising steps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from dlm_lsp.model.sampler import Cancelled

T = TypeVar("T")


@dataclass
class Ticket:
    key: tuple[str, str]
    seq: int
    cancel: threading.Event = field(default_factory=threading.Event)


class RequestGate:
    """Hands out tickets and cancels the ones that a newer request or an edit made stale."""

    def __init__(self) -> None:
        self._seq = 0
        self._live: dict[tuple[str, str], Ticket] = {}
        self.superseded = 0  # requests dropped before or during model work
        self.started = 0  # requests that reached the model thread still current

    def begin(self, uri: str, kind: str) -> Ticket:
        self._seq += 1
        key = (uri, kind)
        old = self._live.get(key)
        if old is not None:
            old.cancel.set()
        ticket = Ticket(key, self._seq)
        self._live[key] = ticket
        return ticket

    def is_current(self, ticket: Ticket) -> bool:
        return not ticket.cancel.is_set() and self._live.get(ticket.key) is ticket

    def invalidate(self, uri: str) -> None:
        """The document changed: whatever was computed for it is stale."""
        for key, ticket in list(self._live.items()):
            if key[0] == uri:
                ticket.cancel.set()

    def cancel_all(self) -> None:
        for ticket in self._live.values():
            ticket.cancel.set()

    def finish(self, ticket: Ticket) -> None:
        if self._live.get(ticket.key) is ticket:
            del self._live[ticket.key]


class ModelThread:
    """One worker thread for all model work (loading included), so requests queue in order."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlm-model")
        self.busy = False  # a job is running now (a cancelled decode runs to its next step)

    async def run(self, gate: RequestGate, ticket: Ticket, debounce_s: float,
                  work: Callable[[threading.Event], T]) -> T | None:
        """Run `work` after the debounce if `ticket` is still current; None if superseded.

        An asyncio cancellation (``$/cancelRequest``) sets the ticket's event, which stops
        the denoising loop at its next step, and propagates.
        """
        try:
            if debounce_s > 0:
                await asyncio.sleep(debounce_s)
            if not gate.is_current(ticket):
                gate.superseded += 1
                return None

            def guarded() -> T | None:
                if ticket.cancel.is_set():  # went stale while queued
                    gate.superseded += 1
                    return None
                gate.started += 1
                self.busy = True
                try:
                    return work(ticket.cancel)
                except Cancelled:
                    gate.superseded += 1
                    return None
                finally:
                    self.busy = False

            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, guarded)
        except asyncio.CancelledError:
            ticket.cancel.set()
            raise
        finally:
            gate.finish(ticket)

    def submit(self, fn: Callable[[], object]) -> None:
        self.executor.submit(fn)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
