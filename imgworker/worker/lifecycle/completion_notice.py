"""Completion notice: a job's optional ``notify`` function receives its result as a background Gearman job.

Before WORK_COMPLETE: if the process dies in between, gearmand re-runs the job and it notifies again.
Best effort (features/notify.py): a notice that cannot be submitted is logged, the job's result stands.
"""

from __future__ import annotations

from collections.abc import Sequence

from imgworker.features.notify import Notifier
from imgworker.worker.lifecycle.hook import Hook, JobState


class CompletionNotice(Hook):
    name = "completion notice"

    def __init__(self, servers: Sequence[str]) -> None:
        self.notifier = Notifier(servers)

    async def after_job(self, job: JobState) -> None:
        await self.notifier.send(job.payload, job.function, job.result)

    async def close(self) -> None:
        await self.notifier.close()
