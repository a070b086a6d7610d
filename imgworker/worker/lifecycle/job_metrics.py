"""Metrics: jobs in flight while they run, every run's duration and stage times, each job's final outcome.

``imgworker_jobs_in_flight`` counts a job from its decode until no run follows (also when it is cancelled);
``imgworker_job_duration_seconds``, ``imgworker_busy_seconds`` and the stage histogram count each run, retries
included (features/metrics.py ``observe_job``); ``imgworker_jobs_total`` counts the final outcome once, after
the retries (``count_job``); a job cancelled at shutdown has none.
"""

from __future__ import annotations

from imgworker.features import metrics
from imgworker.worker.lifecycle.hook import Hook, JobState


class JobMetrics(Hook):
    name = "metrics"

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.observe = metrics.observe_job(backend)

    def before_job(self, job: JobState) -> None:
        metrics.IN_FLIGHT.inc()

    def after_run(self, job: JobState, elapsed: float) -> None:
        self.observe(job.function, job.result, elapsed)

    def after_work(self, job: JobState) -> None:
        metrics.IN_FLIGHT.dec()
        if job.result:  # not for a job cancelled at shutdown: it goes back to the job server, unanswered
            metrics.count_job(job.function, job.result, self.backend)
