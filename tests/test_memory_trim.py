"""The FIM server hands freed heap back when idle, at most once per interval."""

from __future__ import annotations

import sys

import pytest

from dlm_lsp.serving.memory import IdleTrimmer, glibc_malloc_trim


def test_idle_trims_once_per_interval_and_never_without_a_trim_function():
    now = [100.0]
    calls: list[float] = []
    trimmer = IdleTrimmer(min_interval_s=30.0, trim=lambda: calls.append(now[0]) or True,
                          clock=lambda: now[0])
    assert trimmer.idle() is True  # the first idle moment trims
    now[0] += 10.0
    assert trimmer.idle() is False  # too soon
    now[0] += 25.0
    assert trimmer.idle() is True
    assert calls == [100.0, 135.0] and trimmer.count == 2

    nothing = IdleTrimmer(trim=None)
    nothing.trim = None  # a C library without malloc_trim
    assert nothing.due() is False and nothing.idle() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_malloc_trim_gives_freed_heap_back():
    import ctypes

    trim = glibc_malloc_trim()
    if trim is None:
        pytest.skip("not glibc")
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_kb() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    blocks = []
    for _ in range(4000):  # 64 MB in 16 KB blocks: from the heap, not mmap
        p = libc.malloc(16384)
        ctypes.memset(p, 1, 16384)
        blocks.append(p)
    keep = blocks[-1]  # the top block stays: without a trim nothing below it goes back
    for p in blocks[:-1]:
        libc.free(p)
    before = rss_kb()
    assert trim() is True  # it released memory
    after = rss_kb()
    libc.free(keep)
    assert before - after > 32 * 1024  # most of the 64 MB left the process
