"""A per-process memory budget: every job is admitted against what it will cost, estimated from the header.

The pixel limits bound a job's pixels, not its memory: a 196 MP interlaced 16-bit RGBA PNG decodes whole
(1.6 GB), an AVIF encode costs ~25 bytes per output pixel, an animation keeps every frame. So each job's cost
is estimated before any pixel is decoded (``estimate``) and admitted (``charge``) against the process's
budget: a job that fits runs; one that does not fit beside the jobs in flight waits for them (up to its time
limit) and then runs alone; one larger than the whole budget is refused with LIMIT_EXCEEDED saying which
limit. The budget comes from ``--memory-budget`` (MiB) or else the container's memory limit (cgroup
``memory.max``) or the machine's memory, shared by ``--processes``, less a fixed base per process.

A job charged in steps (its decode at the header, its output once the size is planned) waits only for *other*
jobs, never for what it holds itself, and its steps together are held to the budget like one charge. When every
job holding memory waits for more, one goes ahead over the budget instead of all waiting out their time limits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from imgworker.core.deadline import time_left
from imgworker.core.errors import JobTimeout, LimitExceeded

log = logging.getLogger("imgworker.worker.budget")  # the logger keeps its name: operators filter on it

MIB = 1024 * 1024
BASE_PER_PROCESS = 160 * MIB  # interpreter, libvips, boto3, buffers: resident before any job
USABLE_SHARE = 0.85  # of the limit: allocator slack and fragmentation keep the rest
STREAM_ROWS = 256  # rows of the source a streaming decode holds at once (tiles, reduce kernels, caches)
# Bytes per output pixel an encoder holds on top of the image (measured: docs/security.md).
ENCODER_BYTES = {"jpeg": 1.0, "png": 2.0, "webp": 8.0, "avif": 25.0, "gif": 4.0}
# Loaders that decode the whole frame into memory before the first pixel leaves.
WHOLE_DECODE = ("heif", "webp", "gif")
# What a decode holds at its peak, in full decoded frames (width x height x bands x bytes per sample), per decoder
# path, measured against a worker-like process (benchmarks/probes/memory_estimates.py; docs/security.md has the
# table) and rounded up. A PNG or TIFF without shrink-on-load does not stream a few rows as once assumed: its
# resize holds ~0.6 of the frame. An interlaced PNG holds the frame plus an 8-bit sRGB working copy of it
# (INTERLACED_RGB8 x width x height x 3). HEVC HEIF decodes in pillow-heif, is copied for libvips, then resized;
# AVIF (libvips' heif loader: libheif and its AV1 decoder) holds over five frames' worth.
FRAME_SHARE = {"stream": 0.7, "interlaced": 1.1, "gif": 1.6, "heic": 2.8, "heif": 5.6}
INTERLACED_RGB8 = 0.6
# The source's bytes are held about twice at the peak (the bytes read, and the loader's own copy of them).
SOURCE_COPIES = 2.0
# Per decode, whatever its size: codec state, libvips buffers and thread caches, the output's own buffers; 6 MiB
# covers one job alone, jobs side by side measured ~4 MiB more each.
JOB_OVERHEAD = 10 * MIB
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass(frozen=True, slots=True)
class Cost:
    decode: int
    output: int
    frames: int = 1

    @property
    def total(self) -> int:
        return self.decode + self.output

    def describe(self) -> str:
        return (f"~{self.total / MIB:.0f} MiB (decode {self.decode / MIB:.0f} MiB, output and encoder "
                f"{self.output / MIB:.0f} MiB{f', {self.frames} frames' if self.frames > 1 else ''})")


def estimate(*, width: int, height: int, bands: int, bytes_per_sample: int, loader: str, whole: bool,
             out_width: int, out_height: int, fmt: str, frames: int = 1, shrink: int = 1,
             source_bytes: int = 0) -> Cost:
    """What a job will hold at its peak. ``whole``: the loader decodes the frame at once (interlaced PNG,
    progressive JPEG, HEIF/AVIF, WebP, GIF). ``shrink``: the JPEG DCT scale, which a progressive JPEG's
    coefficient buffer does not get (it is full size). ``source_bytes``: the encoded source, held while it
    decodes. Measured against reality per decoder path: FRAME_SHARE above."""
    sample = max(1, bytes_per_sample)
    if loader == "gif":
        bands, sample = 4, 1  # libvips decodes GIF frames to RGBA
    frame = width * height * bands * sample
    if loader == "jpeg" and whole:
        # libjpeg buffers every DCT coefficient of a progressive image: 2 bytes per sample, at full size.
        decode = width * height * bands * 2
    elif loader == "jpeg":  # shrink-on-load, streamed
        decode = (width // shrink) * min(height, STREAM_ROWS) * bands * sample * 2
    elif loader in FRAME_SHARE:
        decode = int(frame * FRAME_SHARE[loader])
    elif loader in WHOLE_DECODE:  # WebP (scaled in the decoder)
        decode = (width // shrink) * (height // shrink) * bands * sample
    elif whole:  # interlaced PNG
        decode = int(frame * FRAME_SHARE["interlaced"] + width * height * 3 * INTERLACED_RGB8)
    else:  # PNG, TIFF: no shrink-on-load
        decode = int(frame * FRAME_SHARE["stream"])
    fixed = int(source_bytes * SOURCE_COPIES) + (JOB_OVERHEAD if frame else 0)
    out_px = out_width * out_height
    output = int(out_px * 4 + out_px * ENCODER_BYTES.get(fmt, 4.0))
    return Cost(decode * frames + fixed, output * frames, frames)


def container_limit() -> int | None:
    """The cgroup memory limit of this container (v2, then v1), or None where there is none."""
    for path in _CGROUP_FILES:
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(raw)
    return None


def derive(configured_mib: int, processes: int, limit: int | None = None) -> int:
    """Bytes one process may admit: ``--memory-budget`` if set, else its share of the container's limit."""
    if configured_mib > 0:
        return configured_mib * MIB
    if limit is None:
        limit = container_limit() or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    share = limit * USABLE_SHARE / max(1, processes) - BASE_PER_PROCESS
    return max(64 * MIB, int(share))


class Budget:
    """Bytes admitted now against ``limit``; ``admit`` blocks while a job would not fit beside the others."""

    def __init__(self, limit: int, source: str = "") -> None:
        self.limit = limit
        self.source = source  # how the limit was chosen, for messages
        self.in_use = 0
        self.jobs = 0  # jobs holding memory now
        self.stuck = 0  # of those, jobs waiting in admit for more (a job charges its decode, then its output)
        self._cv = threading.Condition()

    @contextlib.contextmanager
    def admit(self, cost: Cost, held: int = 0) -> Iterator[None]:
        """``held``: what the same job already holds (its earlier charges): never waited for, and counted
        with ``cost`` against the limit."""
        need = cost.total
        if held + need > self.limit:
            what = cost.describe() if not held else f"~{(held + need) / MIB:.0f} MiB in all ({cost.describe()} " \
                f"on top of {held / MIB:.0f} MiB already admitted)"
            raise LimitExceeded(f"job needs {what}; this worker's memory budget is "
                                f"{self.limit / MIB:.0f} MiB per process ({self.source}): use a smaller source "
                                "or output, or a worker with more memory", memory_needed=held + need,
                                memory_budget=self.limit)
        mine = 1 if held else 0  # this job is one of ``jobs`` already
        with self._cv:
            waited = False
            while self.jobs > mine and self.in_use + need > self.limit:
                # Every other job holding memory waits for more too (each holds its decode and wants its output):
                # none would ever go first, so this one does, over the budget, rather than all waiting out their
                # time limits. The others see it running and wait for it.
                if mine and self.stuck >= self.jobs - 1:
                    log.warning("job admitted over the memory budget: every other job holding memory waits for "
                                "more too (%d of %d MiB in use, needs %d MiB)", self.in_use // MIB,
                                self.limit // MIB, need // MIB)
                    break
                left = time_left()
                if left is not None and left <= 0:
                    raise JobTimeout(f"job waited for memory ({cost.describe()}) past its time limit")
                if not waited:
                    log.info("job waits for memory: needs %d MiB, %d of %d MiB in use", need // MIB,
                             self.in_use // MIB, self.limit // MIB)
                    waited = True
                self.stuck += mine
                try:
                    self._cv.wait(min(left, 1.0) if left is not None else 1.0)
                finally:
                    self.stuck -= mine
            self.in_use += need
            self.jobs += 1 - mine
        _publish(self)
        try:
            yield
        finally:
            with self._cv:
                self.in_use -= need
                self.jobs -= 1 - mine
                self._cv.notify_all()
            _publish(self)


# Who hears of each change of the budget or of what it holds (the worker's metrics: features/metrics.py adds
# itself when imported). Inverted so that this module, which every layer charges, imports nothing above core.
_WATCHERS: list[Callable[[Budget], None]] = []


def watch(watcher: Callable[[Budget], None]) -> None:
    _WATCHERS.append(watcher)


def _publish(budget: Budget) -> None:
    for watcher in _WATCHERS:
        watcher(budget)


# The process's budget: configured by the worker at start (configure); unlimited for library use and tests.
_BUDGET: Budget = Budget(1 << 62, "unlimited")


class _Scope(contextlib.ExitStack):
    last: Cost | None = None  # the job's last charge, for charge_frames
    held = 0  # bytes the job has been admitted with so far


# The running job's admissions, released when the job ends (Service.handle's job_scope).
_SCOPE: ContextVar[_Scope | None] = ContextVar("imgworker_budget_scope", default=None)


def configure(limit: int, source: str) -> Budget:
    global _BUDGET
    _BUDGET = Budget(limit, source)
    _publish(_BUDGET)
    log.info("memory budget %d MiB per process (%s)", limit // MIB, source)
    return _BUDGET


def current() -> Budget:
    return _BUDGET


@contextlib.contextmanager
def job_scope() -> Iterator[None]:
    """Around one job: everything ``charge`` admitted in it is released at its end."""
    with _Scope() as stack:
        token = _SCOPE.set(stack)
        try:
            yield
        finally:
            _SCOPE.reset(token)


def charge(cost: Cost) -> None:
    """Admit ``cost`` for the rest of the running job (waits, or raises LimitExceeded / JobTimeout)."""
    stack = _SCOPE.get()
    started = time.monotonic()
    if stack is None:
        with _BUDGET.admit(cost):
            return
    stack.enter_context(_BUDGET.admit(cost, stack.held))
    stack.held += cost.total
    stack.last = cost
    if time.monotonic() - started > 0.05:
        log.info("job admitted after %.2f s waiting for memory", time.monotonic() - started)


def charge_frames(frames: int, copies: int = 1) -> None:
    """The job keeps ``frames`` frames of the source it was last charged for (an animation kept whole), in
    ``copies`` copies (the decoded base and one per output size, each materialised with all its frames)."""
    stack = _SCOPE.get()
    last = stack.last if stack is not None else None
    if last is not None and frames * copies > 1:
        charge(Cost(last.decode * (frames * copies - 1), 0, frames))
