"""``imgworker exporter``: queue depth of every job server as Prometheus metrics, for dashboards and KEDA.

Each scrape asks every gearmand for its admin ``status`` and ``workers`` and exports, per function, summed
over the servers: ``gearman_jobs_waiting`` (queued, not yet running: the status "total" column counts
running jobs too, so waiting = total - running), ``gearman_jobs_running``, ``gearman_workers_available``
(distinct workers: one worker registered with two servers counts once, by its client id), and
``gearman_up{server}``. The names follow the Go gearman-exporter, so its dashboards and alerts carry over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .gearman import FunctionStatus, WorkerInfo, status, workers

DEFAULT_PORT = 9731


@dataclass
class ServerReport:
    server: str
    up: bool = False
    functions: list[FunctionStatus] = field(default_factory=list)
    workers: list[WorkerInfo] | None = None  # None: the `workers` command failed; fall back to status counts
    seconds: float = 0.0


async def poll_server(server: str, timeout: float) -> ServerReport:
    report = ServerReport(server)
    started = time.perf_counter()
    try:
        report.functions = await status(server, timeout=timeout)
        report.up = True
        report.workers = await workers(server, timeout=timeout)
    except Exception:  # any failure is "down", never a failed scrape
        pass
    report.seconds = time.perf_counter() - started
    return report


async def poll(servers: Iterable[str], timeout: float) -> list[ServerReport]:
    return list(await asyncio.gather(*(poll_server(s, timeout) for s in servers)))


@dataclass
class Totals:
    waiting: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    running: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    workers: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def summarize(reports: Iterable[ServerReport]) -> Totals:
    """Sum queues over servers; count each worker once however many servers it is registered with."""
    totals = Totals()
    seen: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for r in reports:
        if not r.up:
            continue
        for fs in r.functions:
            totals.waiting[fs.name] += max(0, fs.queued - fs.running)
            totals.running[fs.name] += fs.running
            totals.workers.setdefault(fs.name, 0)
            if r.workers is None:
                seen[fs.name].update(("?", r.server, str(i)) for i in range(fs.available_workers))
        for w in r.workers or []:
            # Without a client id ("-") a worker cannot be matched across servers: count it per connection.
            key = ("id", w.client_id) if w.client_id not in ("", "-") else ("fd", r.server, str(w.fd))
            for fn in w.functions:
                seen[fn].add(key)
    for fn, keys in seen.items():
        totals.workers[fn] = len(keys)
    return totals


class GearmanCollector(Collector):
    def __init__(self, servers: list[str], timeout: float = 5.0) -> None:
        self.servers = servers
        self.timeout = timeout

    def collect(self) -> Iterator[Any]:
        reports = asyncio.run(poll(self.servers, self.timeout))
        up = GaugeMetricFamily(
            "gearman_up", "1 when the job server answered the admin status command", labels=["server"]
        )
        took = GaugeMetricFamily(
            "gearman_scrape_duration_seconds", "time to poll this job server", labels=["server"]
        )
        per_server = GaugeMetricFamily(
            "gearman_server_jobs_waiting", "jobs waiting, per job server", labels=["server", "function"]
        )
        for r in reports:
            up.add_metric([r.server], 1 if r.up else 0)
            took.add_metric([r.server], r.seconds)
            for fs in r.functions:
                per_server.add_metric([r.server, fs.name], max(0, fs.queued - fs.running))
        totals = summarize(reports)
        families = [
            ("gearman_jobs_waiting", "jobs queued and not running, summed over job servers", totals.waiting),
            ("gearman_jobs_running", "jobs running, summed over job servers", totals.running),
            ("gearman_workers_available", "distinct workers registered for the function", totals.workers),
        ]
        yield up
        yield took
        yield per_server
        for name, doc, values in families:
            family = GaugeMetricFamily(name, doc, labels=["function"])
            for fn in sorted(values):
                family.add_metric([fn], values[fn])
            yield family


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "exporter", help="export job server queue depths as Prometheus metrics", description=__doc__
    )
    p.add_argument("--server", action="append", help="job server HOST:PORT, repeatable [IMGWORKER_SERVERS]")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port for /metrics (default {DEFAULT_PORT})"
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each job server per scrape"
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from .config import ConfigError
    from .health import HealthServer

    servers = args.server or [
        s.strip() for s in os.environ.get("IMGWORKER_SERVERS", "").split(",") if s.strip()
    ]
    if not servers:
        raise ConfigError("give at least one --server HOST:PORT (or IMGWORKER_SERVERS)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    registry = CollectorRegistry()
    registry.register(GearmanCollector(servers, args.timeout))
    server = HealthServer(args.host, args.port, registry=lambda: registry).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("imgworker.exporter").info("exporting %s on port %d", ",".join(servers), server.port)
    stop.wait()
    server.stop()
    return 0
