"""The worker process: Gearman functions in, service calls in threads, JSON results out.

This is the only place where job errors become Gearman packets. Every job, success or failure, ends in
WORK_COMPLETE with a JSON object (``{"ok": true, ...}`` or ``{"ok": false, "error": {...}}``): gearmand
1.1.20 mangles WORK_EXCEPTION for clients that did not ask for exceptions, and WORK_FAIL cannot carry a
message, so a JSON body is the one signal every client family (CLI, PHP, Perl, Python, Node) reads the same
way. docs/contract.md has the details.

What happens around the work of each job (admission, timing, logging, metrics, retries, failed-job record,
completion notice, callback) is one ordered list of hooks, lifecycle/default.py; this module decodes the
payload, runs the work in a thread within the time limit, and hands both to that list.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imgworker import __version__
from imgworker.backends.base import Backend
from imgworker.core import budget
from imgworker.core.config import WorkerConfig
from imgworker.core.contract import Payload, read_payload
from imgworker.core.errors import ImgworkerError, JobTimeout
from imgworker.core.functions import registered
from imgworker.core.limits import Limits
from imgworker.features import metrics
from imgworker.gearman import Job, Worker
from imgworker.jobs.batch import BatchRunner
from imgworker.jobs.service import Service, error_result, oversized_result
from imgworker.stores import Stores
from imgworker.worker import health
from imgworker.worker import heartbeat as heartbeat_file
from imgworker.worker.lifecycle.chain import Lifecycle
from imgworker.worker.lifecycle.default import default_hooks
from imgworker.worker.lifecycle.hook import JobState
from imgworker.worker.memory import trim_heap

IDLE_TRIM_S = 5  # heartbeats (seconds) without a job before the kept heap is trimmed
log = logging.getLogger("imgworker.worker.runner")

FD_HEADROOM = 8  # descriptors a process must be able to open to take a job (worker._check_fds)


class JobRunner:
    """Runs jobs in a thread pool and turns every outcome into a JSON result, within the job time limit."""

    def __init__(self, service: Service, concurrency: int, timeout_s: float) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="imgworker-job")
        # Threads still running jobs already answered TIMEOUT: Python cannot stop them. Each holds its job slot
        # (on_overrun) until it ends, so no new job waits behind it while an idle worker could run it.
        self.overrunning = 0
        self.on_overrun: Callable[[int], None] | None = None

    @property
    def busy_threads(self) -> bool:
        return self.overrunning > 0

    async def run(self, job: JobState, admit: Callable[[JobState], None]) -> tuple[dict[str, Any], float]:
        """One run of the job's work: its result and seconds. ``admit`` runs first in the thread (the
        lifecycle's admission checks); its refusal is the result, as any job error is."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        running: asyncio.Future[None] = loop.create_future()
        payload = job.payload

        def mark_running() -> None:
            if not running.done():
                running.set_result(None)

        def work() -> dict[str, Any]:
            loop.call_soon_threadsafe(mark_running)
            admit(job)
            return self.service.handle(payload, pipeline=job.pipeline)

        future = loop.run_in_executor(self.executor, work)
        try:
            # The time limit counts from when a thread takes the job, not while it waits behind a busy
            # thread; the job's own deadline is checked between stages, this bounds a stage that never returns.
            pending: list[asyncio.Future[Any]] = [running, future]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            result = await asyncio.wait_for(asyncio.shield(future), self.timeout_s + overrun_grace(self.timeout_s))
        except TimeoutError:
            self.overrunning += 1
            if self.on_overrun is not None:
                self.on_overrun(self.overrunning)
            future.add_done_callback(self._overrun_ended)
            log.warning("job thread overran its time limit; %d such thread(s) still running", self.overrunning)
            result = error_result(JobTimeout(f"job passed its time limit of {self.timeout_s:g} s"))
        except ImgworkerError as exc:
            result = error_result(exc)
        except Exception as exc:
            log.exception("job failed with an internal error", extra={"function": job.function})
            result = error_result(exc)
        if not result.get("ok") and payload.id is not None:
            result["id"] = payload.id
        return result, time.perf_counter() - started

    def _overrun_ended(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: its result was answered long ago ("Future exception was never...")
        self.overrunning -= 1
        if self.on_overrun is not None:
            self.on_overrun(self.overrunning)


def overrun_grace(timeout_s: float) -> float:
    """How long past its limit a job's thread may run before the job is answered TIMEOUT and its slot held:
    the job stops itself at the deadline (checks between stages, libvips set_kill); this covers a stage
    that cannot be stopped (an AV1 encode, an interlaced PNG decoding whole)."""
    return min(5.0, max(0.5, timeout_s / 4))


INLINE_PARSE_BYTES = 4096  # payloads up to this are decoded on the event loop (well under a millisecond)


async def decode(data: bytes, limits: Limits) -> Payload:
    """``read_payload``, off the event loop for a payload over INLINE_PARSE_BYTES: a hostile 64 KiB of
    ``[[],[],...]`` takes tens of milliseconds to decode and check, which would stall every connection, the
    heartbeat and /healthz. Payloads over the limit never get here decoded (gearman skips them unread)."""
    if len(data) <= INLINE_PARSE_BYTES:
        return read_payload(data, limits)
    return await asyncio.get_running_loop().run_in_executor(None, read_payload, data, limits)


class WorkerProcess:
    """One worker process: a Gearman worker registered on every job server."""

    def __init__(
        self, config: WorkerConfig, backend: Backend, stores: Stores, pipelines: Any = None, *,
        serve_http: bool = True, parent_pid: int | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.pipelines = pipelines
        current = pipelines.current if pipelines is not None else None
        service = Service(metrics.meter_stores(stores), backend, config.limits, current)
        limit = budget.derive(config.memory_budget, config.effective_processes)
        how = ("--memory-budget" if config.memory_budget else
               f"{'container limit' if budget.container_limit() else 'machine memory'} shared by "
               f"{config.effective_processes} process(es)")
        budget.configure(limit, how)
        self.runner = JobRunner(service, config.concurrency, config.job_timeout)
        client_id = config.client_id or f"imgworker-{socket.gethostname()}-{os.getpid()}"
        self.gearman = Worker(
            config.servers, client_id=client_id, max_jobs=config.concurrency,
            on_connection_change=metrics.set_server_up,
            on_oversized=functools.partial(oversized_result, config.limits),
            max_job_data=config.limits.max_payload_bytes,
            request_timeout=config.job_server_timeout, on_unresponsive=metrics.set_server_unresponsive,
        )
        self.runner.on_overrun = lambda _n: self._update_holds()
        self.out_of_fds = False
        # `batch` coordinators run on their own connection and job slots, never in the image thread pool.
        self.batches = BatchRunner(config, stores, client_id) if config.batch_slots else None
        # Prefork children leave HTTP to the supervisor (metrics.py: multiprocess mode).
        self.serve_http = serve_http and config.metrics_port > 0
        self.parent_pid = parent_pid
        self.health_max_age = health.HEARTBEAT_MAX_AGE_S
        self.health_server: health.HealthServer | None = None
        self.abandoned = 0  # jobs handed back to gearmand when the drain deadline passed
        self.jobs_started = 0  # for the heartbeat's idle trim
        self._stopping = 0
        self._stopped = asyncio.Event()
        # Everything around the work (admission ... callback), in order: lifecycle/default.py.
        self.lifecycle = Lifecycle(default_hooks(
            config, stores, worker_id=client_id, backend=backend.name, stopped=self._stopped,
            check_fds=self._check_fds,
        ))

    def pipeline_names(self) -> list[str]:
        return sorted(self.pipelines.current()) if self.pipelines is not None else []

    def register_all(self) -> None:
        for name, pipeline in registered(self.backend.name, self.pipeline_names()).items():
            self.gearman.register(name, self._handler(name, pipeline))

    def _handler(self, function: str, pipeline: str | None) -> Callable[[Job], Any]:
        async def handle(job: Job) -> bytes:
            received = time.perf_counter()
            self.jobs_started += 1
            payload = await decode(job.data, self.runner.service.limits)  # once; every hook reads this
            state = JobState(function, pipeline, payload, job.unique, job.is_background, received=received)
            result = await self.lifecycle.run(state, self.runner.run)
            return json.dumps(result, separators=(",", ":")).encode()

        return handle

    def _check_fds(self) -> None:
        """Whether this process can still open a file; if not, hold every slot until it can again."""
        # A job needs several at once (root, directories, the file, a socket): probe for that many.
        fds: list[int] = []
        try:
            for _ in range(FD_HEADROOM):
                fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            starved = False
        except OSError as exc:
            starved = exc.errno in (errno.EMFILE, errno.ENFILE)
        finally:
            for fd in fds:
                os.close(fd)
        if starved != self.out_of_fds:
            self.out_of_fds = starved
            if starved:
                log.error("out of file descriptors: taking no jobs until some are free (/healthz is red)")
            else:
                log.warning("file descriptors available again: taking jobs")
            self._update_holds()

    def _update_holds(self) -> None:
        slots = self.config.concurrency
        overrun = min(slots, self.runner.overrunning)
        no_fds = slots if self.out_of_fds else 0
        self.gearman.hold(max(overrun, no_fds))
        metrics.SLOTS_HELD.labels("overrun").set(overrun)
        metrics.SLOTS_HELD.labels("no_fds").set(no_fds)
        metrics.STALLED.labels("overrun").set(1 if overrun >= slots else 0)
        metrics.STALLED.labels("no_fds").set(1 if no_fds else 0)

    def reload_pipelines(self) -> None:
        """SIGHUP: re-read pipelines; CAN_DO new ones, CANT_DO removed ones. Jobs in flight keep their runner."""
        if self.pipelines is None:
            log.warning("SIGHUP: this worker has no --pipelines directory; nothing to reload")
            return
        before = registered(self.backend.name, self.pipeline_names())
        if not self.pipelines.reload():
            return  # the error is logged; the old set keeps serving
        after = registered(self.backend.name, self.pipeline_names())
        for name in sorted(set(before) - set(after)):
            self.gearman.unregister(name)
        for name, pipeline in after.items():
            if name not in before:
                self.gearman.register(name, self._handler(name, pipeline))

    def request_stop(self) -> None:
        self._stopping += 1
        self._stopped.set()

    async def _heartbeat(self) -> None:
        """Stamp the heartbeat /healthz reads; a prefork child whose supervisor died drains and exits; the heap
        kept for the next job goes back to the OS after IDLE_TRIM_S seconds without one."""
        idle, trimmed, seen = 0, True, self.jobs_started
        while True:
            metrics.tick()
            heartbeat_file.beat()  # the supervisor's (prefork children only: worker/heartbeat.py)
            if self.gearman.in_flight or self.jobs_started != seen:  # a job between two beats counts too
                idle, trimmed, seen = 0, False, self.jobs_started
            elif not trimmed:
                idle += 1
                if idle >= IDLE_TRIM_S:
                    trim_heap()
                    trimmed = True
            if self.out_of_fds:
                self._check_fds()
            if self.parent_pid is not None and os.getppid() != self.parent_pid and not self._stopping:
                log.warning("supervisor %d is gone: draining", self.parent_pid)
                self.request_stop()
            await asyncio.sleep(1.0)

    def _start_http(self) -> None:
        checks = health.WorkerChecks(max_age=self.health_max_age)
        self.health_server = health.HealthServer(
            self.config.metrics_host, self.config.metrics_port, healthz=checks.healthz, readyz=checks.readyz
        ).start()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_pipelines)
        metrics.CONCURRENCY.set(self.config.concurrency)
        metrics.INFO.labels(__version__, self.backend.name).set(1)
        metrics.DRAINING.set(0)
        self._update_holds()
        heartbeat = asyncio.create_task(self._heartbeat())
        if self.serve_http:
            self._start_http()
        self.register_all()
        serving = asyncio.create_task(self.gearman.run())
        batches = asyncio.create_task(self.batches.run()) if self.batches is not None else None
        log.info(
            "worker ready backend=%s servers=%s concurrency=%d functions=%d",
            self.backend.name,
            ",".join(self.config.servers),
            self.config.concurrency,
            len(registered(self.backend.name, self.pipeline_names())),
        )
        await self._stopped.wait()
        metrics.DRAINING.set(1)
        if self.batches is not None:
            # A batch outlives any drain deadline: hand it back now; another worker resumes it.
            await self.batches.close()
        in_flight, deadline = self.gearman.in_flight, self.config.drain_timeout
        log.info("draining: no new jobs; %d in flight, deadline %.0f s", in_flight, deadline)
        drain = asyncio.create_task(self.gearman.drain(self.config.drain_timeout))
        # A second signal while draining ends the drain at once.
        loop.add_signal_handler(signal.SIGTERM, drain.cancel)
        loop.add_signal_handler(signal.SIGINT, drain.cancel)
        try:
            finished = await drain
        except asyncio.CancelledError:
            finished = False
        if not finished and self.gearman.in_flight:
            self.abandoned = self.gearman.in_flight
            log.warning("drain ended (deadline or second signal) with %d jobs in flight: handing them back",
                        self.abandoned)
        await self.gearman.close()
        await self.lifecycle.close()
        serving.cancel()
        if batches is not None:
            batches.cancel()
        heartbeat.cancel()
        for server in self.config.servers:
            metrics.set_server_up(server, False)
        if self.health_server is not None:
            self.health_server.stop()
        # Threads still running abandoned jobs cannot be cancelled: process.run_one exits without joining them.
        self.runner.executor.shutdown(wait=False, cancel_futures=True)
        _ignore_late_signals(loop)
        if self.abandoned:
            log.warning("worker stopped; %d jobs handed back to the job server", self.abandoned)
            return 1
        log.info("worker stopped cleanly")
        return 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _ignore_late_signals(loop: asyncio.AbstractEventLoop) -> None:
    """The worker has stopped: a signal from here on (a shell's exit trap after its ``kill``, an impatient
    operator) must neither kill it mid-exit nor meet the closing loop. loop.close() shuts its self-pipe before
    it drops the signal handlers, and a signal between the two writes to the closed pipe ("Exception ignored
    ... BrokenPipeError"); after them, SIGTERM's default action would end a clean exit with -15. SIGTERM and
    SIGHUP are ignored; SIGINT gets Python's KeyboardInterrupt back, so Ctrl-C at a terminal can still break
    an exit that hangs."""
    for sig in STOP_SIGNALS:
        loop.remove_signal_handler(sig)  # SIGINT: back to signal.default_int_handler
        if sig != signal.SIGINT:
            signal.signal(sig, signal.SIG_IGN)
