"""Failed-job record: a job whose final result is ``ok: false`` leaves one redacted record under ``--failed-jobs``.

Written after any retries and before WORK_COMPLETE (store I/O in a thread), foreground failures included
(``background`` says which); features/failed_jobs.py builds and stores the record.
"""

from __future__ import annotations

import asyncio

from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.core.errors import ImgworkerError
from imgworker.features.failed_jobs import FailedJobs, build_record
from imgworker.stores import Stores
from imgworker.worker.lifecycle.hook import Hook, JobState


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


class FailedRecord(Hook):
    name = "failed-job record"

    def __init__(self, records: FailedJobs | None, worker_id: str) -> None:
        self.records = records
        self.worker_id = worker_id

    async def after_job(self, job: JobState) -> None:
        if job.ok or self.records is None:
            return
        background = await job.is_background()
        record = build_record(job.function, job.payload, job.unique, job.result.get("error") or {}, job.attempts,
                              background=background, worker=self.worker_id)
        await asyncio.get_running_loop().run_in_executor(None, self.records.write, record)
