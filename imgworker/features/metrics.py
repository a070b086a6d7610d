"""Every Prometheus metric imgworker exports, in one place (docs/operations.md lists them).

Prefork (``--processes N > 1``) uses prometheus_client's multiprocess mode: the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before spawning children, each child writes its values to files there, and the
supervisor alone serves them on ``--metrics-port``. That is why every gauge names its ``multiprocess_mode``:
``livesum`` adds the live children up, ``liveall`` keeps one series per child (label ``pid``), which
health.py reads to judge each child. Outside prefork the mode is ignored and the default registry is served.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from imgworker.core import budget
from imgworker.core.rss import resident_bytes
from imgworker.stores import Store, Stores, WriteOptions

STAGES = ("read", "decode", "encode", "write")  # result["ms"] keys; "decode" is decode + process

disable_created_metrics()  # *_created series double the count and no dashboard of ours reads them

# Seconds: thumbnails take milliseconds, pipelines and huge sources tens of seconds.
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# One count per job, at its final outcome: a background job's attempts that the worker retries count in
# imgworker_job_retries_total, not here, so an error rate over this counter is a rate of jobs, not of attempts.
JOBS = Counter(
    "imgworker_jobs",
    "jobs finished, by final outcome: ok or the error code (retried attempts: imgworker_job_retries_total)",
    ["function", "backend", "outcome"],
)
JOB_SECONDS = Histogram(
    "imgworker_job_duration_seconds",
    "job wall time in the worker",
    ["function", "backend"],
    buckets=_TIME_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "imgworker_job_stage_duration_seconds",
    "time per stage of successful jobs: read, decode (decode + process), encode, write",
    ["function", "backend", "stage"],
    buckets=_TIME_BUCKETS,
)
BUSY_SECONDS = Counter("imgworker_busy_seconds", "job-seconds spent; rate() / concurrency is utilisation")
STORE_BYTES_READ = Counter("imgworker_store_read_bytes", "bytes read from stores", ["store"])
STORE_BYTES_WRITTEN = Counter("imgworker_store_written_bytes", "bytes written to stores", ["store"])
IN_FLIGHT = Gauge("imgworker_jobs_in_flight", "jobs running now", multiprocess_mode="livesum")
CONCURRENCY = Gauge(
    "imgworker_concurrency", "job slots (--concurrency per process)", multiprocess_mode="livesum"
)
DRAINING = Gauge("imgworker_draining", "1 while draining after SIGTERM", multiprocess_mode="livemax")
SERVER_UP = Gauge(
    "imgworker_job_server_up",
    "1 when connected and registered with this job server",
    ["server"],
    multiprocess_mode="liveall",
)
SERVER_UNRESPONSIVE = Gauge(
    "imgworker_job_server_unresponsive",
    "1 while this job server leaves requests unanswered (--job-server-timeout; the worker reconnects)",
    ["server"],
    multiprocess_mode="liveall",
)
HEARTBEAT = Gauge(
    "imgworker_heartbeat_timestamp_seconds",
    "last tick of the job loop (Unix time)",
    multiprocess_mode="liveall",
)
RSS_BYTES = Gauge("imgworker_resident_memory_bytes", "process resident memory", multiprocess_mode="liveall")
VIPS_BYTES = Gauge(
    "imgworker_vips_memory_bytes", "memory libvips has allocated now", multiprocess_mode="liveall"
)
VIPS_PEAK_BYTES = Gauge(
    "imgworker_vips_memory_highwater_bytes", "libvips allocation peak", multiprocess_mode="liveall"
)
GPU_USED_BYTES = Gauge(
    "imgworker_gpu_memory_used_bytes", "GPU memory in use (GPU backend)", multiprocess_mode="liveall"
)
GPU_TOTAL_BYTES = Gauge(
    "imgworker_gpu_memory_total_bytes", "GPU memory on the device", multiprocess_mode="liveall"
)
GPU_BATCH = Histogram(
    "imgworker_gpu_batch_size", "images per GPU batch (GPU backend)", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
FAILED_RECORDS = Counter(
    "imgworker_failed_job_records", "failed-job records: written, or logged instead (the store refused)", ["result"]
)
JOB_RETRIES = Counter(
    "imgworker_job_retries", "worker retries of background jobs after a transient failure", ["function", "code"]
)
CALLBACKS = Counter(
    "imgworker_callbacks", "HTTP callback attempts: sent (2xx), failed (one attempt), given_up", ["outcome"]
)
# Hostile-input bounds (docs/security.md): slots a process will not fill, and its memory budget (budget.py).
SLOTS_HELD = Gauge(
    "imgworker_slots_held",
    "job slots not taken: a thread still running past its job's time limit, or no file descriptors left",
    ["reason"],
    multiprocess_mode="liveall",
)
STALLED = Gauge(
    "imgworker_stalled",
    "1 while every job slot of this process is held (see imgworker_slots_held): /healthz is red",
    ["reason"],
    multiprocess_mode="liveall",
)
MEMORY_BUDGET_BYTES = Gauge(
    "imgworker_memory_budget_bytes", "memory this process admits jobs against (budget.py)", multiprocess_mode="liveall"
)
MEMORY_RESERVED_BYTES = Gauge(
    "imgworker_memory_reserved_bytes", "estimated memory of the jobs admitted now", multiprocess_mode="liveall"
)


def _publish_budget(current: budget.Budget) -> None:
    MEMORY_BUDGET_BYTES.set(current.limit)
    MEMORY_RESERVED_BYTES.set(current.in_use)


budget.watch(_publish_budget)
INFO = Gauge(
    "imgworker_build_info", "1, with the version and backend", ["version", "backend"], multiprocess_mode="max"
)


def observe_job(backend: str) -> Callable[[str, dict[str, Any], float], None]:
    """A JobRunner observer recording the duration and per-stage time of every attempt (count_job: outcomes)."""

    def observe(function: str, result: dict[str, Any], elapsed: float) -> None:
        ok = bool(result.get("ok"))
        used = str(result.get("backend", backend))
        JOB_SECONDS.labels(function, used).observe(elapsed)
        BUSY_SECONDS.inc(elapsed)
        sample_memory()  # the peak is right after a job, not at the next tick
        if ok:
            for stage, ms in result.get("ms", {}).items():
                if stage in STAGES:
                    STAGE_SECONDS.labels(function, used, stage).observe(float(ms) / 1000)

    return observe


def count_job(function: str, result: dict[str, Any], backend: str) -> None:
    """Count a job's final outcome, once, after the worker's retries (imgworker_jobs_total)."""
    outcome = "ok" if result.get("ok") else str(result.get("error", {}).get("code", "INTERNAL"))
    JOBS.labels(function, str(result.get("backend", backend)), outcome).inc()


def set_server_up(server: str, up: bool) -> None:
    SERVER_UP.labels(server).set(1 if up else 0)


def set_server_unresponsive(server: str, unresponsive: bool) -> None:
    SERVER_UNRESPONSIVE.labels(server).set(1 if unresponsive else 0)


def set_gpu_memory(used_bytes: int, total_bytes: int) -> None:
    """For the GPU backend: call after each batch (cheap)."""
    GPU_USED_BYTES.set(used_bytes)
    GPU_TOTAL_BYTES.set(total_bytes)


def observe_gpu_batch(size: int) -> None:
    """For the GPU backend: one call per batch sent to the device."""
    GPU_BATCH.observe(size)


def tick() -> None:
    """Called by the job loop about once a second: heartbeat plus the memory gauges."""
    HEARTBEAT.set(time.time())
    sample_memory()


def sample_memory() -> None:
    rss = resident_bytes()
    if rss is not None:
        RSS_BYTES.set(rss)
    vips = _vips_tracked()
    if vips is not None:
        VIPS_BYTES.set(vips[0])
        VIPS_PEAK_BYTES.set(vips[1])


_vips: Any = None


def _vips_tracked() -> tuple[int, int] | None:
    """libvips' own allocation counters (vips_tracked_get_mem). pyvips' cffi binding does not declare
    them, so open the libvips that pyvips already loaded (same handle, same counters) with ctypes."""
    global _vips
    if _vips is None:
        _vips = False
        try:
            with open("/proc/self/maps") as f:
                paths = set(re.findall(r"(/\S*/libvips[^/\s]*\.so[.\d]*)$", f.read(), re.M))
            for path in sorted(paths):
                if "_libvips" in os.path.basename(path):  # pyvips' cffi module, not libvips itself
                    continue
                lib = ctypes.CDLL(path)
                for fn in (lib.vips_tracked_get_mem, lib.vips_tracked_get_mem_highwater):
                    fn.restype = ctypes.c_size_t
                _vips = lib
                break
        except (OSError, AttributeError):
            _vips = False
    if not _vips:
        return None
    return int(_vips.vips_tracked_get_mem()), int(_vips.vips_tracked_get_mem_highwater())


class MeteredStore:
    """A Store that counts the bytes passing through it (wraps each scheme's store)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self._read = STORE_BYTES_READ.labels(self.scheme)
        self._written = STORE_BYTES_WRITTEN.labels(self.scheme)

    def check(self, url: str, *, write: bool = False) -> None:
        self.inner.check(url, write=write)

    def read(self, url: str, *, max_bytes: int) -> bytes:
        data = self.inner.read(url, max_bytes=max_bytes)
        self._read.inc(len(data))
        return data

    def write(self, url: str, data: bytes, options: WriteOptions) -> None:
        self.inner.write(url, data, options)
        self._written.inc(len(data))

    def exists(self, url: str) -> bool:
        return self.inner.exists(url)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def __getattr__(self, name: str) -> Any:  # store-specific extras (e.g. S3 client settings)
        return getattr(self.inner, name)


def meter_stores(stores: Stores) -> Stores:
    return Stores({s: MeteredStore(stores.for_url(f"{s}://")) for s in stores.schemes})
