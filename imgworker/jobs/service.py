"""One job, start to finish: parse the payload, read the source, process, write the destination, report.

This is synchronous on purpose: the worker runs it in a thread so the Gearman I/O loop is never blocked by
image work (libvips releases the GIL). It raises only ImgworkerError; the worker loop turns that into the
job's JSON result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from imgworker.backends.base import Backend
from imgworker.core import budget
from imgworker.core.contract import CONTRACT_VERSION, JobRequest, Payload, parse_request, payload_too_big
from imgworker.core.deadline import Deadline, set_running
from imgworker.core.errors import BadRequest, ImgworkerError, InternalError, LimitExceeded
from imgworker.core.functions import INFO, RESIZE
from imgworker.core.limits import Limits
from imgworker.gearman import DEFAULT_MAX_PACKET
from imgworker.jobs.builtin import BUILTIN
from imgworker.pipeline.context import JobContext, PipelineRunner
from imgworker.stores import Stores


class Service:
    def __init__(
        self,
        stores: Stores,
        backend: Backend,
        limits: Limits,
        pipelines: Mapping[str, PipelineRunner] | Callable[[], Mapping[str, PipelineRunner]] | None = None,
    ) -> None:
        self.stores = stores
        self.backend = backend
        self.limits = limits
        self._pipelines = pipelines or {}

    @property
    def pipelines(self) -> Mapping[str, PipelineRunner]:
        # A callable lets the worker swap the whole set on SIGHUP without touching jobs in flight.
        return self._pipelines() if callable(self._pipelines) else self._pipelines

    def runner(self, request: JobRequest) -> PipelineRunner:
        """The job's pipeline: built-in ``resize`` / ``info`` (jobs/builtin.py) or a loaded YAML one."""
        if request.info:
            return BUILTIN[INFO]
        if request.pipeline is None:
            return BUILTIN[RESIZE]
        runner = self.pipelines.get(request.pipeline)
        if runner is None:
            known = ", ".join(sorted(self.pipelines)) or "none loaded"
            raise BadRequest(f"unknown pipeline {request.pipeline!r}; this worker has: {known}")
        return runner

    def handle(self, payload: bytes | Payload, *, pipeline: str | None = None) -> dict[str, Any]:
        """Run one job (its payload raw, or as the worker decoded it once); the result or ImgworkerError."""
        with budget.job_scope():  # the memory the job was admitted with is released when it ends
            return self._handle(payload, pipeline)

    def _handle(self, payload: bytes | Payload, pipeline: str | None) -> dict[str, Any]:
        deadline = Deadline.after(self.limits.job_timeout_s)
        set_running(deadline)  # stores size their timeouts to what is left, the memory budget its waits
        request = parse_request(payload, self.limits, pipeline=pipeline)
        # Check access to both ends before any work, so a forbidden dst costs nothing.
        self.stores.for_url(request.src).check(request.src)
        ctx = JobContext(request, self.stores, self.backend, self.limits, deadline)
        result = self.runner(request).run(ctx)
        result.setdefault("ok", True)
        result["backend"] = self.backend.name
        result["ms"] = {k: round(v, 2) for k, v in ctx.timings.items()}
        result["ms"]["total"] = round((time.monotonic() - deadline.started) * 1000, 2)
        result["contract"] = CONTRACT_VERSION
        if request.id is not None:
            result["id"] = request.id
        return result


def error_result(exc: BaseException) -> dict[str, Any]:
    """The JSON object of a failed job. Anything not an ImgworkerError is a bug: INTERNAL, no internals."""
    err = exc if isinstance(exc, ImgworkerError) else InternalError(f"internal error ({type(exc).__name__})")
    return {"ok": False, "error": err.to_dict(), "contract": CONTRACT_VERSION}


def oversized_result(limits: Limits, function: str, size: int) -> bytes:
    """The answer to a job whose payload the Gearman connection skipped unread (its size is all we know):
    over the payload limit, BAD_REQUEST as any payload over it; over the packet limit, LIMIT_EXCEEDED."""
    if size > DEFAULT_MAX_PACKET:
        err: ImgworkerError = LimitExceeded(f"the job's payload is {size} bytes, over the job server packet limit; "
                                            "a job carries URLs, never image data")
    else:
        err = payload_too_big(size, limits)
    return json.dumps(error_result(err), separators=(",", ":")).encode()
