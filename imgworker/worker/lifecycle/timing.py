"""Timing: the job's clock, from its packet's arrival (before the payload is decoded) to its final result.

Stopped once, first of the after-job phase, so that the log line and every hook after it read one figure;
retries and their backoff count in it. (Each run's own time, for the metrics, is measured by the job runner
from when a thread takes the run; the time limit is the runner's too.)
"""

from __future__ import annotations

import time

from imgworker.worker.lifecycle.hook import Hook, JobState


class Timing(Hook):
    name = "timing"

    async def after_job(self, job: JobState) -> None:
        job.elapsed = time.perf_counter() - job.received
