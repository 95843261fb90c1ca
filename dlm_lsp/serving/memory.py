"""Handing freed heap back to the system when the FIM server goes idle.

A batch's tensors are allocated and freed by glibc's malloc; batches of other shapes (rows x
tokens) leave the freed memory in its arenas, where it counts as resident until the same
shapes come back. Over a 2-hour soak serve-http held 418 MB for an hour, then 435-442 MB after
the load pattern changed (bigger batches), while the language server, one request at a time,
stayed flat. ``malloc_trim(0)`` returns the free pages of every arena; it runs off the event
loop, between batches, when no request waits, and at most every ``min_interval_s``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable


def glibc_malloc_trim() -> Callable[[], bool] | None:
    """``malloc_trim(0)`` of the C library when it is glibc's (None elsewhere: musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


class IdleTrimmer:
    """Trims the heap when the server is idle, at most once per `min_interval_s`."""

    def __init__(self, min_interval_s: float = 30.0,
                 trim: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval_s = min_interval_s
        self.trim = trim if trim is not None else glibc_malloc_trim()
        self.clock = clock
        self.last: float | None = None
        self.count = 0

    def due(self) -> bool:
        """Whether a trim would run now."""
        if self.trim is None:
            return False
        return self.last is None or self.clock() - self.last >= self.min_interval_s

    def idle(self) -> bool:
        """Call when the queue has emptied: trims if due; whether it trimmed."""
        if not self.due():
            return False
        assert self.trim is not None
        self.trim()
        self.last = self.clock()
        self.count += 1
        return True
