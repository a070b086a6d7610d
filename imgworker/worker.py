"""The worker process: Gearman functions in, service calls in threads, JSON results out.

This is the only place where job errors become Gearman packets. Every job, success or failure, ends in
WORK_COMPLETE with a JSON object (``{"ok": true, ...}`` or ``{"ok": false, "error": {...}}``): gearmand
1.1.20 mangles WORK_EXCEPTION for clients that did not ask for exceptions, and WORK_FAIL cannot carry a
message, so a JSON body is the one signal every client family (CLI, PHP, Perl, Python, Node) reads the same
way. docs/contract.md has the details.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .backends.base import Backend
from .config import WorkerConfig
from .errors import ImgworkerError, JobTimeout
from .gearman import Job, Worker
from .service import Service, error_result
from .stores import Stores

log = logging.getLogger("imgworker.worker")

BASE_FUNCTION = "resize"


def function_names(backend: str, pipelines: list[str]) -> dict[str, str | None]:
    """Gearman function name -> pipeline name (None for plain resize). A CPU worker never registers @gpu."""
    names: dict[str, str | None] = {}
    for name in [BASE_FUNCTION, *pipelines]:
        target = None if name == BASE_FUNCTION else name
        names[name] = target
        names[f"{name}@{backend}"] = target
    return names


class JobRunner:
    """Runs jobs in a thread pool and turns every outcome into a JSON result; observers see each job."""

    def __init__(self, service: Service, concurrency: int, timeout_s: float) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="imgworker-job")
        self.observers: list[Callable[[str, dict[str, Any], float], None]] = []

    async def run(self, function: str, pipeline: str | None, payload: bytes) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        future = loop.run_in_executor(self.executor, lambda: self.service.handle(payload, pipeline=pipeline))
        try:
            # The job's own deadline is checked between stages; this bounds a stage that never returns.
            result = await asyncio.wait_for(future, self.timeout_s + 5.0)
        except TimeoutError:
            result = error_result(JobTimeout(f"job passed its time limit of {self.timeout_s:g} s"))
        except ImgworkerError as exc:
            result = error_result(exc)
        except Exception as exc:
            log.exception("job failed with an internal error", extra={"function": function})
            result = error_result(exc)
        elapsed = time.perf_counter() - started
        for observe in self.observers:
            observe(function, result, elapsed)
        return result


def log_job(function: str, result: dict[str, Any], elapsed: float, payload: bytes | None = None) -> None:
    outcome = "ok" if result.get("ok") else result.get("error", {}).get("code", "INTERNAL")
    src = dst = ""
    if payload is not None:
        try:
            obj = json.loads(payload)
            src, dst = str(obj.get("src", ""))[:300], str(obj.get("dst", ""))[:300]
        except (ValueError, AttributeError):
            pass
    log.info(
        "job function=%s outcome=%s backend=%s ms=%.1f src=%s dst=%s",
        function,
        outcome,
        result.get("backend", "-"),
        elapsed * 1000,
        src,
        dst,
    )


class WorkerProcess:
    """One worker process: a Gearman worker registered on every job server."""

    def __init__(self, config: WorkerConfig, backend: Backend, stores: Stores, pipelines: Any = None) -> None:
        self.config = config
        self.backend = backend
        self.pipelines = pipelines
        service = Service(stores, backend, config.limits, pipelines.current if pipelines is not None else None)
        self.runner = JobRunner(service, config.concurrency, config.job_timeout)
        client_id = config.client_id or f"imgworker-{socket.gethostname()}-{os.getpid()}"
        self.gearman = Worker(config.servers, client_id=client_id, max_jobs=config.concurrency)
        self._stopping = 0
        self._stopped = asyncio.Event()

    def pipeline_names(self) -> list[str]:
        return sorted(self.pipelines.current()) if self.pipelines is not None else []

    def register_all(self) -> None:
        for name, pipeline in function_names(self.backend.name, self.pipeline_names()).items():
            self.gearman.register(name, self._handler(name, pipeline))

    def _handler(self, function: str, pipeline: str | None) -> Callable[[Job], Any]:
        async def handle(job: Job) -> bytes:
            started = time.perf_counter()
            result = await self.runner.run(function, pipeline, job.data)
            log_job(function, result, time.perf_counter() - started, job.data)
            return json.dumps(result, separators=(",", ":")).encode()

        return handle

    def request_stop(self) -> None:
        self._stopping += 1
        self._stopped.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        self.register_all()
        serving = asyncio.create_task(self.gearman.run())
        log.info(
            "worker ready backend=%s servers=%s concurrency=%d functions=%d",
            self.backend.name,
            ",".join(self.config.servers),
            self.config.concurrency,
            len(function_names(self.backend.name, self.pipeline_names())),
        )
        await self._stopped.wait()
        log.info("draining: no new jobs; %d in flight, deadline %.0f s", self.gearman.in_flight, self.config.drain_timeout)
        # A second signal while draining ends the drain at once.
        loop.add_signal_handler(signal.SIGTERM, lambda: drain.cancel())
        loop.add_signal_handler(signal.SIGINT, lambda: drain.cancel())
        drain = asyncio.create_task(self.gearman.drain(self.config.drain_timeout))
        try:
            finished = await drain
        except asyncio.CancelledError:
            finished = False
        if not finished:
            log.warning("drain ended with %d jobs in flight: handing them back to the job server", self.gearman.in_flight)
        await self.gearman.close()
        serving.cancel()
        self.runner.executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped cleanly")
        return 0
