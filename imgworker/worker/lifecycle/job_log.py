"""Logging: one INFO line per job once its result is final (retries included), ``job function=... outcome=...``.

Payload values are made safe for one line: credentials redacted, control and bidi characters escaped (a ``src``
with a newline cannot forge a line), at most 300 characters each.
"""

from __future__ import annotations

import logging
from typing import Any

from imgworker.core.contract import Payload
from imgworker.core.errors import redact_url
from imgworker.core.text import escape_controls
from imgworker.worker.lifecycle.hook import Hook, JobState

# The job line keeps the runner's logger name (docs/operations.md shows it): log queries filter on it.
log = logging.getLogger("imgworker.worker.runner")

def printable(value: object, limit: int = 300) -> str:
    """A payload value for one log line: credentials redacted, controls and bidi escaped (no forged lines)."""
    return escape_controls(redact_url(str(value))[:limit])


def log_job(function: str, result: dict[str, Any], elapsed: float, payload: Payload | None = None) -> None:
    outcome = "ok" if result.get("ok") else result.get("error", {}).get("code", "INTERNAL")
    src = dst = ""
    if payload is not None:
        src, dst = printable(payload.fields.get("src", "")), printable(payload.fields.get("dst", ""))
    log.info(
        "job function=%s outcome=%s backend=%s ms=%.1f src=%s dst=%s",
        function,
        outcome,
        result.get("backend", "-"),
        elapsed * 1000,
        src,
        dst,
    )


class JobLog(Hook):
    name = "logging"

    async def after_job(self, job: JobState) -> None:
        log_job(job.function, job.result, job.elapsed, job.payload)
