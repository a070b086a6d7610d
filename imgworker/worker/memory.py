"""The worker process's heap: glibc malloc settings made at start, and the trim when the worker is idle.

Kept apart from process.py (assembly and supervision) so that the job runner, which trims the heap from its
heartbeat, imports only this and not the module that imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import pyvips

MALLOC_ARENA_MAX = 2  # glibc's default (8 per core) lets a long-running libvips worker's RSS double
BIG_BUFFER = 32 * 2**20  # allocations from here on get their own mapping (glibc's largest mmap threshold)
HEAP_KEEP = 64 * 2**20  # freed heap kept for the next job before glibc trims it


def limit_malloc_arenas() -> None:
    """mallopt(M_ARENA_MAX, 2) unless MALLOC_ARENA_MAX is set (glibc then applied the operator's value).

    Must run before job threads start: arenas already created stay. benchmarks/service/memory.py measures it.
    """
    if "MALLOC_ARENA_MAX" not in os.environ:
        _glibc("mallopt", -8, MALLOC_ARENA_MAX)  # -8 is M_ARENA_MAX in glibc's malloc.h


def keep_job_buffers() -> None:
    """Keep a job's big buffers in the heap for the next job (up to HEAP_KEEP freed), and no libvips cache.

    Each job allocates the same few big buffers (the source, libjpeg's coefficient planes for a progressive
    JPEG: ~40 MB at 13 MP, the decoded frame). Handed back to the OS at every free, as glibc does past its
    mmap threshold, every job pays the kernel to fault and zero them again: 15-25 % of a progressive
    thumbnail, 5-15 % of a mixed workload. So: a fixed M_MMAP_THRESHOLD of 32 MiB (glibc's highest; fixed,
    so the threshold does not drift) and an M_TRIM_THRESHOLD of HEAP_KEEP, unless MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_ are set (glibc then applied the operator's values). Cost, measured with 2 job
    threads on the corpus: peak RSS +16 % (187 -> 217 MiB; w2048 167 -> 193), and ~200 MiB held between
    jobs, which ``trim_heap`` hands back once the process is idle (docs/operations.md, "Memory on long runs").
    libvips' operation cache only holds references to old sources in a worker (no job repeats an operation
    on the same buffer): off.
    """
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _glibc("mallopt", -3, BIG_BUFFER)  # -3 is M_MMAP_THRESHOLD in glibc's malloc.h
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        _glibc("mallopt", -1, HEAP_KEEP)  # -1 is M_TRIM_THRESHOLD
    pyvips.cache_set_max(0)


def trim_heap() -> None:
    """Hand the heap glibc keeps for the next job (keep_job_buffers) back to the OS: malloc_trim(0)."""
    _glibc("malloc_trim", 0)


def _glibc(function: str, *args: int) -> None:
    """``function(*args)`` from glibc; nothing where the C library is another (musl, macOS): nothing to tune."""
    with contextlib.suppress(OSError, AttributeError):
        getattr(ctypes.CDLL("libc.so.6"), function)(*args)
