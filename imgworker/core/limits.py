"""Limits that bound the work and memory of one job (decompression bombs, giant outputs, huge payloads)."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    # 100+ MP camera photos pass (Phase One: 150 MP); the 10^10-pixel bombs in the corpus do not.
    max_source_pixels: int = 200_000_000
    max_source_bytes: int = 100 * 1024 * 1024
    max_output_pixels: int = 100_000_000
    max_output_side: int = 16_384
    max_frames: int = 500
    max_payload_bytes: int = 64 * 1024
    job_timeout_s: float = 60.0


# The running job's deadline (time.monotonic()), for code below the job that has no job context to ask: a
# store sizes its network timeouts and retries to what is left (stores/s3.py). Set by Service.handle in the
# job's own thread; each worker thread has its own context, and every job sets it afresh.
_DEADLINE: ContextVar[float | None] = ContextVar("imgworker_job_deadline", default=None)


def set_job_deadline(deadline: float | None) -> None:
    _DEADLINE.set(deadline)


def time_left() -> float | None:
    """Seconds until the running job's deadline (negative once past), or None outside a job."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
