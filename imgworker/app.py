"""Assemble a worker from its config, and run one process or a prefork group of them.

One process per core is the fastest model for libvips thumbnails (a single JPEG decode is serial, and
``VIPS_CONCURRENCY=1`` per process avoids threads fighting over cores); ``--concurrency`` jobs in flight per
process let store I/O overlap with image work.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

from .backends.base import Backend
from .config import ConfigError, WorkerConfig
from .stores import FileStore, Store, Stores

log = logging.getLogger("imgworker")


def build_backend(config: WorkerConfig) -> Backend:
    from .backends.cpu import CpuBackend

    if config.backend == "cpu":
        return CpuBackend(fail_on=config.fail_on)
    try:
        from .backends import gpu
    except ImportError:
        gpu = None  # type: ignore[assignment]
    if config.backend == "gpu":
        if gpu is None:
            raise ConfigError("--backend gpu: this build has no GPU backend")
        return gpu.create_backend(config)  # raises ConfigError naming the extra when no device works
    if gpu is not None and getattr(gpu, "gpu_available", lambda: False)():
        return gpu.create_backend(config)
    return CpuBackend(fail_on=config.fail_on)


def build_stores(config: WorkerConfig) -> Stores:
    stores: dict[str, Store] = {"file": FileStore(config.roots)}
    if config.s3_buckets:
        from .stores.s3 import S3Store

        stores["s3"] = S3Store.from_config(config)
    return stores_from(stores)


def stores_from(stores: dict[str, Store]) -> Stores:
    return Stores(stores)


def build_pipelines(config: WorkerConfig, backend: Backend) -> Any:
    if config.pipelines is None:
        return None
    from .pipeline.registry import PipelineSet

    return PipelineSet.load(config.pipelines, backend=backend.name)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s pid=%(process)d %(name)s %(message)s",
        stream=sys.stderr,
    )


def run_one(config: WorkerConfig) -> int:
    """Run a single worker process in the foreground (the prefork group's children run this too)."""
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    setup_logging(config.log_level)
    from .worker import WorkerProcess

    backend = build_backend(config)
    stores = build_stores(config)
    pipelines = build_pipelines(config, backend)
    process = WorkerProcess(config, backend, stores, pipelines)
    return asyncio.run(process.run())


def _child(config: WorkerConfig) -> None:
    sys.exit(run_one(config))


def run(config: WorkerConfig) -> int:
    """``imgworker worker``: one process, or a supervised group that restarts children that crash."""
    n = config.effective_processes
    if n == 1:
        return run_one(config)
    setup_logging(config.log_level)
    # Fail fast in the parent for config that every child would reject (no device, bad pipelines...).
    backend = build_backend(config)
    build_pipelines(config, backend)
    ctx = multiprocessing.get_context("spawn")
    children: list[Any] = []
    stopping = False

    def start_child() -> Any:
        proc = ctx.Process(target=_child, args=(config,), daemon=False)
        proc.start()
        return proc

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        # SIGHUP only reloads pipelines in each child; SIGTERM/SIGINT drain them.
        stopping = stopping or signum != signal.SIGHUP
        for proc in children:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    children.extend(start_child() for _ in range(n))
    log.info("supervising %d worker processes", n)
    while True:
        alive = [p for p in children if p.is_alive()]
        if stopping and not alive:
            break
        for i, proc in enumerate(children):
            if not proc.is_alive() and not stopping:
                log.warning("worker process %s exited with %s; restarting it", proc.pid, proc.exitcode)
                time.sleep(0.5)
                children[i] = start_child()
        time.sleep(0.2)
    codes = [p.exitcode for p in children]
    return 0 if all(c == 0 for c in codes) else 1
