"""Assemble a worker from its config, and run one process or a prefork group of them.

One process per core is the fastest model for libvips thumbnails (a single JPEG decode is serial, and
``VIPS_CONCURRENCY=1`` per process avoids threads fighting over cores); ``--concurrency`` jobs in flight per
process let store I/O overlap with image work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from imgworker.backends.base import Backend
from imgworker.backends.cpu import CpuBackend
from imgworker.backends.gpu import create_backend, gpu_available, require_gpu
from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.pipeline import PipelineError, PipelineSet
from imgworker.stores import FileStore, Store, Stores
from imgworker.stores.s3 import S3Store
from imgworker.worker import health, heartbeat, hybrid
from imgworker.worker.lifecycle.failed_record import open_records
from imgworker.worker.memory import MALLOC_ARENA_MAX, keep_job_buffers, limit_malloc_arenas
from imgworker.worker.runner import WorkerProcess

log = logging.getLogger("imgworker")


def build_backend(config: WorkerConfig) -> Backend:
    if config.backend == "cpu":
        return CpuBackend(fail_on=config.fail_on)
    if config.backend == "numpy":
        return create_backend(config, numpy=True)
    if config.backend == "gpu":
        return create_backend(config)  # raises ConfigError naming the extra when no device works
    if gpu_available():
        return create_backend(config)
    return CpuBackend(fail_on=config.fail_on)


def build_stores(config: WorkerConfig) -> Stores:
    stores: dict[str, Store] = {"file": FileStore(config.roots)}
    if config.s3_buckets:
        stores["s3"] = S3Store.from_config(config)
    return stores_from(stores)


def stores_from(stores: dict[str, Store]) -> Stores:
    return Stores(stores)


def backend_name(config: WorkerConfig) -> str:
    """The backend a worker of this config would get, checked without building it (no CUDA context)."""
    if config.backend in ("cpu", "numpy"):
        return config.backend
    if config.backend == "gpu":
        require_gpu()  # raises ConfigError naming the extra when no device works
        return "gpu"
    return "gpu" if gpu_available() else "cpu"


def build_pipelines(config: WorkerConfig, backend: str) -> Any:
    if config.pipelines is None:
        return None
    try:
        return PipelineSet.load(config.pipelines, backend=backend)
    except PipelineError as exc:  # the worker refuses to start; each line is file:line: problem and fix
        raise ConfigError(f"pipelines in {config.pipelines} do not load:\n{exc}") from None


PYVIPS_ARGUMENT_LOGGERS = ("pyvips.vobject", "pyvips.voperation")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s pid=%(process)d %(name)s %(message)s",
        stream=sys.stderr,
    )
    # pyvips forwards libvips' per-operation g_info chatter at INFO (~15 lines per job): keep it at debug only.
    logging.getLogger("pyvips").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # ... but never pyvips' own debug lines: they print every argument of every call, the source's bytes
    # included (a 187 MB PNG became 4x that in text: +1.7 GB and 12 s per job at --log-level debug).
    for name in PYVIPS_ARGUMENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def run_one(config: WorkerConfig, *, child: bool = False, parent_pid: int | None = None) -> int:
    """Run a single worker process in the foreground (the prefork group's children run this too)."""
    limit_malloc_arenas()
    keep_job_buffers()
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    setup_logging(config.log_level)
    backend = build_backend(config)
    stores = build_stores(config)
    pipelines = build_pipelines(config, backend.name)
    process = WorkerProcess(config, backend, stores, pipelines, serve_http=not child, parent_pid=parent_pid)
    code = asyncio.run(process.run())
    if process.abandoned or process.runner.busy_threads:
        # Job threads past the drain deadline (or past their time limit) cannot be cancelled and would
        # block interpreter exit; gearmand has already handed their jobs to other workers or they were answered.
        logging.shutdown()
        os._exit(code)
    return code


def _child(config: WorkerConfig, parent_pid: int, beat_path: str) -> None:
    # Own process group: a terminal's Ctrl-C reaches only the supervisor, which forwards it once; a
    # second copy would end the drain at once.
    os.setpgrp()
    heartbeat.stamp_to(beat_path)
    sys.exit(run_one(config, child=True, parent_pid=parent_pid))


def _serve_children_metrics(config: WorkerConfig) -> Any:
    """Prefork: children write metrics to PROMETHEUS_MULTIPROC_DIR; this process serves them all."""
    path = os.environ.get(health.MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):  # stale files from an earlier run would haunt the sums
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    else:
        os.environ[health.MULTIPROC_ENV] = tempfile.mkdtemp(prefix="imgworker-metrics-")
    # /readyz turns red for a silent child before the supervisor replaces it (at --heartbeat-timeout).
    checks = health.WorkerChecks(max_age=min(health.HEARTBEAT_MAX_AGE_S, config.heartbeat_timeout / 2))
    return health.HealthServer(
        config.metrics_host, config.metrics_port, healthz=checks.healthz, readyz=checks.readyz
    ).start()


RESTART_FIRST_S = 0.5  # delay before restarting a child that crashed
RESTART_MAX_S = 60.0  # cap of the doubling: a child that crashes at start is retried once a minute
RESTART_STABLE_S = 60.0  # a child that ran this long before it died starts the doubling again
# After SIGTERM the children get --drain-timeout plus this (closing connections, records, exit) before the
# supervisor SIGKILLs what is left and exits: a stopped or wedged child must not keep a rollout waiting forever.
STOP_MARGIN_S = 5.0


class RestartBackoff:
    """Capped exponential backoff for one child slot: 0.5 s, 1 s, 2 s ... 60 s while it keeps crashing soon
    after its start, back to 0.5 s once a child ran RESTART_STABLE_S. A crash loop (bad node, broken mount,
    a poison job grabbed at every start) then costs one spawn a minute, not two a second."""

    def __init__(self) -> None:
        self.crashes = 0

    def delay(self, uptime: float) -> float:
        self.crashes = 1 if uptime >= RESTART_STABLE_S else self.crashes + 1
        return min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (self.crashes - 1))


def run(config: WorkerConfig) -> int:
    """``imgworker worker``: one process, or a supervised group that restarts children that crash.

    A GPU worker's group also holds CPU-backend children on the cores its GPU processes leave (hybrid.py).
    """
    # Resolving "auto"/"gpu" probes CUDA (no context); cpu and numpy need no probe.
    resolved = config.backend if config.backend in ("cpu", "numpy") else backend_name(config)
    layout = hybrid.plan(config, resolved)
    slots = hybrid.child_configs(config, layout)
    n = len(slots)
    if n == 1:
        return run_one(config)
    setup_logging(config.log_level)
    # Children are fresh interpreters (spawn): glibc reads this at their start.
    os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENA_MAX))
    server = _serve_children_metrics(config) if config.metrics_port else None
    # Fail fast in the parent for config that every child would reject (no device, bad pipelines...),
    # without building a backend here: a GPU one would hold a CUDA context the parent never uses.
    build_pipelines(config, resolved)
    if layout.hybrid:
        build_pipelines(config, "cpu")
    stores = build_stores(config)  # a bad --s3-bucket or missing boto3 fails here, not in crash-looping children
    open_records(config, stores)  # so does a --failed-jobs prefix outside the roots / buckets
    ctx = multiprocessing.get_context("spawn")
    beats = tempfile.mkdtemp(prefix="imgworker-heartbeat-")
    children: list[Any] = []
    started_at: list[float] = []
    started_wall: list[float] = []  # time.time() of each start: a heartbeat file older than that is its forebear's
    backoff = [RestartBackoff() for _ in range(n)]
    restart_at: dict[int, float] = {}  # slot -> when its replacement starts
    stopping = False
    stop_deadline: float | None = None

    def start_child(slot: int) -> Any:
        proc = ctx.Process(target=_child, args=(slots[slot], os.getpid(), os.path.join(beats, str(slot))),
                           daemon=False)
        proc.start()
        return proc

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        # SIGHUP only reloads pipelines in each child; SIGTERM/SIGINT drain them.
        stopping = stopping or signum != signal.SIGHUP
        # SIGINT goes on as SIGTERM (the same drain in a child): a child still starting has no handler yet, and
        # Python's default SIGINT action would print a KeyboardInterrupt traceback where SIGTERM just ends it.
        sent = signal.SIGTERM if signum == signal.SIGINT else signum
        for proc in children:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sent)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    children.extend(start_child(i) for i in range(n))
    started_at.extend(time.monotonic() for _ in range(n))
    started_wall.extend(time.time() for _ in range(n))
    if layout.hybrid:
        log.info("supervising %d worker processes: %d %s + %d cpu (hybrid node, %d CPUs, %d CPU threads per %s "
                 "process)", n, layout.main, layout.backend, layout.cpu, layout.cpus, layout.main_threads,
                 layout.backend)
    else:
        log.info("supervising %d worker processes", n)
    while True:
        alive = [p for p in children if p.is_alive()]
        if stopping and not alive:
            break
        now = time.monotonic()
        if stopping:
            if stop_deadline is None:
                stop_deadline = now + config.drain_timeout + STOP_MARGIN_S
            elif now >= stop_deadline:
                _kill_children(alive, f"still running {config.drain_timeout + STOP_MARGIN_S:.0f} s after the "
                                      "stop signal (drain timeout + margin)")
                break
        for i, proc in enumerate(children):
            if not stopping and proc.is_alive():
                silent = heartbeat.age(os.path.join(beats, str(i)), started_wall[i])
                if silent is not None and silent > config.heartbeat_timeout:
                    _kill_children([proc], f"its job loop silent for {silent:.0f} s (stopped or wedged; "
                                           f"--heartbeat-timeout {config.heartbeat_timeout:g})")
            if stopping or proc.is_alive():
                continue
            if i not in restart_at:  # newly dead: plan its restart (without blocking the other slots)
                delay = backoff[i].delay(now - started_at[i])
                restart_at[i] = now + delay
                log.warning("worker process %s exited with %s; restarting it in %.1f s (crash %d in a row)",
                            proc.pid, proc.exitcode, delay, backoff[i].crashes)
                if server is not None and proc.pid is not None:
                    health.child_exited(proc.pid)
            elif now >= restart_at[i]:
                del restart_at[i]
                children[i] = start_child(i)
                started_at[i] = time.monotonic()
                started_wall[i] = time.time()
        time.sleep(0.1)
    # Every child is gone: a late SIGTERM must not kill the exit (Python's finalization puts its default action
    # back in place of `forward`); Ctrl-C gets Python's KeyboardInterrupt back, to break an exit that hangs.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if server is not None:
        server.stop()
    shutil.rmtree(beats, ignore_errors=True)
    # -SIGTERM: a child the stop signal ended before it ran its job loop (it installs its drain handler before
    # it registers any function), so it held no job: as clean as one that drained.
    codes = [p.exitcode for p in children]
    return 0 if all(c in (0, -signal.SIGTERM) for c in codes) else 1


def _kill_children(procs: list[Any], why: str) -> None:
    """SIGKILL (a stopped process cannot drain: SIGTERM would wait for SIGCONT) and reap: their connections
    close, so gearmand hands the jobs they held to other workers."""
    for proc in procs:
        if proc.pid is not None and proc.is_alive():
            log.error("worker process %d killed: %s; gearmand hands its jobs to other workers", proc.pid, why)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.join(5)
