"""A job's one deadline: when it started, how long it may run, and so when it must stop.

Made once per job (jobs/service.py, from ``--job-timeout``); a pipeline's own ``timeout`` narrows it for the
steps and the writes alike (JobContext.narrow). Everything that stops work at the deadline takes this type:
the checks between stages (``check``), libvips' kill switch (imaging/kill.py), the backends' evaluations,
the memory budget's wait and the S3 clients' timeouts (``time_left``, through the running job's context).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

from imgworker.core.errors import JobTimeout


@dataclass(frozen=True, slots=True)
class Deadline:
    started: float  # time.monotonic() when the job started
    limit_s: float  # how long it may run: the figure a TIMEOUT message names

    @classmethod
    def after(cls, limit_s: float) -> Deadline:
        return cls(time.monotonic(), limit_s)

    @property
    def at(self) -> float:
        """time.monotonic() at which the job must stop."""
        return self.started + self.limit_s

    def left(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def narrowed(self, limit_s: float) -> Deadline:
        """The same start with at most ``limit_s`` to run (a pipeline's ``timeout``)."""
        return self if limit_s >= self.limit_s else Deadline(self.started, limit_s)

    def check(self, stage: str) -> None:
        """JobTimeout when the deadline has passed, before ``stage`` begins."""
        if self.passed():
            raise JobTimeout(f"job passed its time limit of {self.limit_s:g} s before {stage}")

    def timeout(self, stage: str) -> JobTimeout:
        """The error of work stopped at the deadline during ``stage``."""
        return JobTimeout(f"job passed its time limit of {self.limit_s:g} s during {stage}")


# The running job's deadline, for code below the job that has no job context to ask: a store sizes its network
# timeouts and retries to what is left (stores/s3_budget.py), the memory budget waits no longer than it.
# Set by Service.handle in the job's own thread; each worker thread has its own context, and every job sets it.
_RUNNING: ContextVar[Deadline | None] = ContextVar("imgworker_job_deadline", default=None)


def set_running(deadline: Deadline | None) -> None:
    _RUNNING.set(deadline)


def time_left() -> float | None:
    """Seconds until the running job's deadline (negative once past), or None outside a job."""
    deadline = _RUNNING.get()
    return None if deadline is None else deadline.left()
