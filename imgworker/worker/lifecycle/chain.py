"""Run one job through the ordered hook list: every phase calls every hook in list order (hook.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from imgworker.worker.lifecycle.hook import Hook, JobState

# The runner's logger: the line that says a hook failed sits with the job lines that log queries filter on.
log = logging.getLogger("imgworker.worker.runner")

# One run of the work: given the job and the admission check to call in its thread, its result and seconds.
Attempt = Callable[[JobState, Callable[[JobState], None]], Awaitable[tuple[dict[str, Any], float]]]


class Lifecycle:
    """The hooks of a worker, in order. ``run`` takes a job from its decoded payload to its final result."""

    def __init__(self, hooks: list[Hook]) -> None:
        self.hooks = hooks

    async def run(self, job: JobState, attempt: Attempt) -> dict[str, Any]:
        # try/except written out in each loop, not a helper: this runs for every hook of every job.
        for hook in self.hooks:
            hook.before_job(job)
        try:
            while True:
                job.result, elapsed = await attempt(job, self.admit)
                for hook in self.hooks:
                    try:
                        hook.after_run(job, elapsed)
                    except Exception:  # bookkeeping never costs the job its result
                        _failed("after a run", job, hook)
                if not await self._run_again(job):
                    break
                job.attempts += 1
        finally:
            for hook in self.hooks:
                try:
                    hook.after_work(job)
                except Exception:
                    _failed("after the work", job, hook)
        for hook in self.hooks:
            try:
                await hook.after_job(job)
            except Exception:  # the job has its result: a hook never makes it WORK_FAIL, nor stops the next
                _failed("after the job", job, hook)
        return job.result

    def admit(self, job: JobState) -> None:
        """Every hook's admission check, in the job's thread; the first refusal (an exception) stands."""
        for hook in self.hooks:
            hook.admit(job)

    async def _run_again(self, job: JobState) -> bool:
        for hook in self.hooks:
            try:
                if await hook.run_again(job):
                    return True
            except Exception:  # a retry that cannot be decided is not made
                _failed("after a run", job, hook)
        return False

    async def close(self) -> None:
        for hook in self.hooks:
            try:
                await hook.close()
            except Exception:
                log.exception("shutdown: the %s hook failed to close", hook.name)


def _failed(phase: str, job: JobState, hook: Hook) -> None:
    log.exception("%s %s: the %s hook failed", phase, job.function, hook.name)
