"""Callback: a job's ``callback`` URL receives its final result, signed, from the sender's own threads.

Queued here (never waited for: a slow receiver holds no job slot); a callback given up after its tries leaves
a ``kind: "callback"`` failed-job record. At shutdown the sender is closed after the drain
(features/callbacks.py). Whether a job's callback is allowed at all is checked by the admission hook.
"""

from __future__ import annotations

import asyncio

from imgworker.core.config import WorkerConfig
from imgworker.features.callbacks import CallbackPolicy, CallbackSender, Delivery
from imgworker.features.failed_jobs import FailedJobs, build_record
from imgworker.worker.lifecycle.hook import Hook, JobState


class Callback(Hook):
    name = "callback"

    def __init__(self, config: WorkerConfig, policy: CallbackPolicy, records: FailedJobs | None,
                 worker_id: str) -> None:
        self.records = records
        self.worker_id = worker_id
        self.sender: CallbackSender | None = None
        if config.callback_allow and config.callback_secret:
            self.sender = CallbackSender(
                policy, config.callback_secret, tries=config.callback_tries,
                timeout=config.callback_timeout, backoff=min(0.5, config.retry_backoff),
                give_up=self._given_up,
            )

    async def after_job(self, job: JobState) -> None:
        if self.sender is not None:
            self.sender.send(job.payload, job.function, job.unique, job.result)

    def _given_up(self, d: Delivery, reason: str, tries: int) -> None:
        if self.records is None:
            return
        error = {"code": "UNAVAILABLE", "message": f"callback to {d.target} gave up: {reason}", "retryable": True}
        # Tries left > 0: the worker stopped before they were used (`failed retry` sends it again).
        callback = {"url": str(d.target), "tries": tries, "reason": reason,
                    "tries_left": max(0, self.sender.tries - tries) if self.sender is not None else 0}
        self.records.write(build_record(d.function, d.payload, d.unique, error, tries, callback=callback,
                                        worker=self.worker_id))

    async def close(self) -> None:
        if self.sender is not None:  # joins its threads (a few seconds at most): off the event loop
            await asyncio.get_running_loop().run_in_executor(None, self.sender.close)
