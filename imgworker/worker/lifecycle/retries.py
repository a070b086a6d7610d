"""Retries: a background job's transient failure runs again, ``--retries`` times, with a backoff.

Only a *background* job (nobody waits for its result; the job server says so, see
``gearman.Job.is_background``) is run again by the worker after a transient failure (STORE_FAILED or TIMEOUT
marked retryable), with capped, jittered backoff. A foreground caller gets the first answer at once,
``retryable: true`` included, and decides for itself: it may have a deadline of its own. A stop request cuts a
backoff short; the failure is then final (and recorded by the hooks after this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from imgworker.features import metrics
from imgworker.worker.lifecycle.hook import Hook, JobState

# The retry line sits with the job lines under the runner's logger (docs/reliability.md quotes it).
log = logging.getLogger("imgworker.worker.runner")

RETRY_CODES = ("STORE_FAILED", "TIMEOUT")
MAX_RETRY_DELAY_S = 30.0


def should_retry(result: dict[str, Any]) -> bool:
    err = result.get("error") or {}
    return not result.get("ok") and bool(err.get("retryable")) and err.get("code") in RETRY_CODES


def retry_delay(first: float, retry: int) -> float:
    """Seconds before retry number ``retry`` (1, 2, ...): doubling from ``first``, capped, with jitter."""
    return min(MAX_RETRY_DELAY_S, first * 2 ** (retry - 1)) * random.uniform(0.75, 1.0)


class Retries(Hook):
    name = "retries"

    def __init__(self, retries: int, backoff: float, stopped: asyncio.Event) -> None:
        self.retries = retries
        self.backoff = backoff
        self.stopped = stopped  # set by the worker's stop request (SIGTERM, SIGINT, supervisor gone)

    async def run_again(self, job: JobState) -> bool:
        if not should_retry(job.result) or job.attempts > self.retries or self.stopped.is_set():
            return False
        if not await job.is_background():
            return False
        code = str(job.result["error"]["code"])
        delay = retry_delay(self.backoff, job.attempts)
        metrics.JOB_RETRIES.labels(job.function, code).inc()
        log.warning("job function=%s %s: retry %d/%d in %.1f s", job.function, code, job.attempts, self.retries,
                    delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), delay)
        return not self.stopped.is_set()
