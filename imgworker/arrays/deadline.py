"""The one deadline check of a job: pipeline.context.JobContext (reads, writes) and pipeline.StepContext (steps,
encodes) both call it with the job's single deadline (a pipeline's ``timeout`` narrows it for both)."""

from __future__ import annotations

import time

from imgworker.core.errors import JobTimeout


def check(deadline: float, timeout_s: float, stage: str) -> None:
    if time.monotonic() > deadline:
        raise JobTimeout(f"job passed its time limit of {timeout_s:g} s before {stage}")
