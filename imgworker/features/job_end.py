"""What happens when a job's result is final: worker retries decided, failures recorded, callbacks queued.

Retry policy: only a *background* job (nobody waits for its result; the job server says so, see
``gearman.Job.is_background``) is run again by the worker after a transient failure (STORE_FAILED or TIMEOUT
marked retryable), ``--retries`` times with capped, jittered backoff. A foreground caller gets the first
answer at once, ``retryable: true`` included, and decides for itself: it may have a deadline of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.core.contract import Payload
from imgworker.core.errors import ImgworkerError
from imgworker.features.callbacks import CallbackPolicy, CallbackSender, Delivery
from imgworker.features.failed_jobs import FailedJobs, build_record
from imgworker.gearman import Job
from imgworker.stores import Stores

log = logging.getLogger("imgworker.features.job_end")

RETRY_CODES = ("STORE_FAILED", "TIMEOUT")
MAX_RETRY_DELAY_S = 30.0


def should_retry(result: dict[str, Any]) -> bool:
    err = result.get("error") or {}
    return not result.get("ok") and bool(err.get("retryable")) and err.get("code") in RETRY_CODES


def retry_delay(first: float, retry: int) -> float:
    """Seconds before retry number ``retry`` (1, 2, ...): doubling from ``first``, capped, with jitter."""
    return min(MAX_RETRY_DELAY_S, first * 2 ** (retry - 1)) * random.uniform(0.75, 1.0)


def open_records(config: WorkerConfig, stores: Stores) -> FailedJobs | None:
    """The --failed-jobs prefix, checked against the roots / buckets: a ConfigError at start-up, not later."""
    if not config.failed_jobs:
        return None
    try:
        records = FailedJobs(stores, config.failed_jobs)
        records.check()
    except ImgworkerError as exc:
        raise ConfigError(f"--failed-jobs {config.failed_jobs}: {exc.message}") from None
    return records


class JobEnd:
    def __init__(self, config: WorkerConfig, stores: Stores, worker_id: str) -> None:
        self.worker_id = worker_id
        self.records = open_records(config, stores)
        self.policy = CallbackPolicy(config.callback_allow)
        self.sender: CallbackSender | None = None
        if config.callback_allow and config.callback_secret:
            self.sender = CallbackSender(
                self.policy, config.callback_secret, tries=config.callback_tries,
                timeout=config.callback_timeout, backoff=min(0.5, config.retry_backoff),
                give_up=self._callback_given_up,
            )

    async def finished(self, job: Job, function: str, result: dict[str, Any], attempts: int,
                       background: bool | None, payload: Payload) -> None:
        """Record a failure (store I/O in a thread, before WORK_COMPLETE), then queue the callback."""
        if not result.get("ok") and self.records is not None:
            if background is None:
                background = await job.is_background()
            record = build_record(function, payload, job.unique, result.get("error") or {}, attempts,
                                  background=background, worker=self.worker_id)
            await asyncio.get_running_loop().run_in_executor(None, self.records.write, record)
        if self.sender is not None:
            self.sender.send(payload, function, job.unique, result)

    def _callback_given_up(self, d: Delivery, reason: str, tries: int) -> None:
        if self.records is None:
            return
        error = {"code": "UNAVAILABLE", "message": f"callback to {d.target} gave up: {reason}", "retryable": True}
        # Tries left > 0: the worker stopped before they were used (`failed retry` sends it again).
        callback = {"url": str(d.target), "tries": tries, "reason": reason,
                    "tries_left": max(0, self.sender.tries - tries) if self.sender is not None else 0}
        self.records.write(build_record(d.function, d.payload, d.unique, error, tries, callback=callback,
                                        worker=self.worker_id))

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
