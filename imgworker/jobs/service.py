"""One job, start to finish: parse the payload, read the source, process, write the destination, report.

This is synchronous on purpose: the worker runs it in a thread so the Gearman I/O loop is never blocked by
image work (libvips releases the GIL). It raises only ImgworkerError; the worker loop turns that into the
job's JSON result.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgworker.arrays.deadline import check as check_deadline
from imgworker.backends.base import Backend
from imgworker.core.contract import CONTRACT_VERSION, JobRequest, Payload, parse_request, payload_too_big
from imgworker.core.errors import BadRequest, ImgworkerError, InternalError, LimitExceeded
from imgworker.core.formats import content_type
from imgworker.core.limits import Limits, set_job_deadline
from imgworker.gearman import DEFAULT_MAX_PACKET
from imgworker.jobs.builtin import BUILTIN, INFO, RESIZE
from imgworker.stores import Stores, WriteOptions
from imgworker.worker import budget


class PipelineRunner(Protocol):
    """A named pipeline (imgworker.pipeline) as the service sees it."""

    name: str

    def run(self, ctx: JobContext) -> dict[str, Any]: ...


@dataclass
class JobContext:
    request: JobRequest
    stores: Stores
    backend: Backend
    limits: Limits
    deadline: float
    timings: dict[str, float] = field(default_factory=dict)
    timeout_s: float | None = None  # what ``deadline`` allows (None: the worker's --job-timeout)

    def narrow(self, deadline: float, timeout_s: float) -> None:
        """A pipeline's own ``timeout`` shortens the job's one deadline, writes included."""
        if deadline < self.deadline:
            self.deadline, self.timeout_s = deadline, timeout_s

    def check_deadline(self, stage: str) -> None:
        check_deadline(self.deadline, self.timeout_s or self.limits.job_timeout_s, stage)

    def read_source(self) -> bytes:
        t0 = time.perf_counter()
        store = self.stores.for_url(self.request.src)
        data = store.read(self.request.src, max_bytes=self.limits.max_source_bytes)
        self.timings["read"] = self.timings.get("read", 0.0) + (time.perf_counter() - t0) * 1000
        return data

    def write(self, url: str, data: bytes, fmt: str, **options: Any) -> None:
        self.check_deadline("write")
        refuse_overwriting_source(self.request.src, url)
        t0 = time.perf_counter()
        store = self.stores.for_url(url)
        store.write(url, data, WriteOptions(content_type=content_type(fmt), **options))
        self.timings["write"] = self.timings.get("write", 0.0) + (time.perf_counter() - t0) * 1000


def same_object(a: str, b: str) -> bool:
    if a.startswith("file:") and b.startswith("file:"):
        from imgworker.stores.file import url_to_path

        try:
            return os.path.realpath(url_to_path(a)) == os.path.realpath(url_to_path(b))
        except (BadRequest, OSError, ValueError):
            return False
    return a == b


def refuse_overwriting_source(src: str, dst: str) -> None:
    if same_object(src, dst):
        raise BadRequest(f"dst {dst[:300]!r} is the source itself: the source is never modified; write elsewhere")


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
        """The job's pipeline: built-in ``resize`` / ``info`` (pipeline/builtin.py) or a loaded YAML one."""
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
        started = time.monotonic()
        set_job_deadline(started + self.limits.job_timeout_s)  # stores size their timeouts to what is left
        request = parse_request(payload, self.limits, pipeline=pipeline)
        # Check access to both ends before any work, so a forbidden dst costs nothing.
        self.stores.for_url(request.src).check(request.src)
        ctx = JobContext(request, self.stores, self.backend, self.limits, started + self.limits.job_timeout_s)
        result = self.runner(request).run(ctx)
        result.setdefault("ok", True)
        result["backend"] = self.backend.name
        result["ms"] = {k: round(v, 2) for k, v in ctx.timings.items()}
        result["ms"]["total"] = round((time.monotonic() - started) * 1000, 2)
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
