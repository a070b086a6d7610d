"""Admission: whether this job may run here, and whether this process may take the next one.

Before each run, in the job's thread: a ``callback`` that is malformed or not on ``--callback-allow`` refuses
the job (FORBIDDEN_PATH / BAD_REQUEST) before any work. After a job that failed: the process checks that it
can still open files; one out of descriptors holds its job slots until it can (the worker's ``check_fds``).
"""

from __future__ import annotations

from collections.abc import Callable

from imgworker.features.callbacks import CallbackPolicy
from imgworker.worker.lifecycle.hook import Hook, JobState


class Admission(Hook):
    name = "admission"

    def __init__(self, policy: CallbackPolicy, check_fds: Callable[[], None]) -> None:
        self.policy = policy
        self.check_fds = check_fds

    def admit(self, job: JobState) -> None:
        self.policy.precheck(job.payload)

    def after_work(self, job: JobState) -> None:
        if job.result and not job.ok:  # before the next GRAB: a process out of descriptors takes no more jobs
            self.check_fds()
