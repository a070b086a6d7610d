"""``imgworker exporter``: queue depth of every job server as Prometheus metrics, for dashboards and KEDA.

Each scrape asks every gearmand for its admin ``status`` and ``workers`` and exports, per function, summed
over the servers: ``gearman_jobs_waiting`` (queued, not yet running: the status "total" column counts
running jobs too, so waiting = total - running), ``gearman_jobs_running``, ``gearman_workers_available``
(distinct workers: one worker registered with two servers counts once, by its client id), and
``gearman_up{server}``. The names follow the Go gearman-exporter, so its dashboards and alerts carry over.
``gearman_jobs_queued`` (waiting + running) is what autoscaling reads: it does not drop when workers take jobs.

Only imgworker's own functions are exported, never every name a client made up (per-request ``notify``
functions, batch replies, other applications): ``resize``, ``info``, ``batch`` (one name: its coordinators run on
every worker) and each pipeline of ``--pipelines`` with the @cpu/@gpu variants the workers register, plus
``--function NAME`` (exact, or a glob such as ``thumb_*``).
Exact names are always exported (0 until seen), so a query summing them is never empty while the exporter and a
job server answer: an absent series means the signal is lost, and must not be read as "no work".
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from imgworker.core.config import ConfigError, from_env
from imgworker.core.functions import registered
from imgworker.gearman import FunctionStatus, WorkerInfo, status, workers
from imgworker.jobs.batch import FUNCTION as BATCH_FUNCTION  # registered plain, by CPU and GPU workers alike
from imgworker.pipeline.model import PipelineError
from imgworker.pipeline.registry import load_dir
from imgworker.worker.health import HealthServer

DEFAULT_PORT = 9731
BACKENDS = ("cpu", "gpu")


def imgworker_functions(pipelines_dir: str | None) -> list[str]:
    """The function names imgworker workers register: batch, and resize, info and each pipeline, plain and @backend.

    A pipeline with ``backends: [cpu]`` has no @gpu name (GPU workers skip it). Loads the directory with the
    worker's own loader, so a pipeline the workers would refuse stops the exporter too (PipelineError).
    """
    served: dict[str, list[str]] = {b: [] for b in BACKENDS}
    if pipelines_dir:
        for backend in BACKENDS:
            served[backend] = sorted(load_dir(pipelines_dir, backend)[0])
    names = {BATCH_FUNCTION}
    for backend, pipelines in served.items():
        names |= set(registered(backend, pipelines))
    return sorted(names)


class FunctionFilter:
    """Which function names are exported: exact names (always, 0 until seen) and glob patterns (when seen)."""

    def __init__(self, names: Iterable[str]) -> None:
        names = list(names)
        self.patterns = [n for n in names if any(ch in n for ch in "*?[")]
        self.exact = sorted({n for n in names if n not in self.patterns})

    def __call__(self, function: str) -> bool:
        return function in self.exact or any(fnmatch.fnmatchcase(function, p) for p in self.patterns)


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
    def __init__(self, servers: list[str], timeout: float = 5.0, functions: FunctionFilter | None = None) -> None:
        self.servers = servers
        self.timeout = timeout
        self.functions = functions or FunctionFilter(imgworker_functions(None))

    def collect(self) -> Iterator[Any]:
        return self.families(asyncio.run(poll(self.servers, self.timeout)))

    def families(self, reports: list[ServerReport]) -> Iterator[Any]:
        """The metric families for one poll of the servers."""
        wanted = self.functions
        up = GaugeMetricFamily(
            "gearman_up", "1 when the job server answered the admin status command", labels=["server"]
        )
        took = GaugeMetricFamily(
            "gearman_scrape_duration_seconds", "time to poll this job server", labels=["server"]
        )
        ignored = GaugeMetricFamily(
            "gearman_functions_ignored", "function names the job servers report that are not exported"
        )
        per_server = {
            "waiting": GaugeMetricFamily(
                "gearman_server_jobs_waiting", "jobs waiting, per job server", labels=["server", "function"]
            ),
            "running": GaugeMetricFamily(
                "gearman_server_jobs_running", "jobs running, per job server", labels=["server", "function"]
            ),
            "workers": GaugeMetricFamily(
                "gearman_server_workers",
                "workers registered with this job server for the function",
                labels=["server", "function"],
            ),
        }
        others: set[str] = set()
        for r in reports:
            up.add_metric([r.server], 1 if r.up else 0)
            took.add_metric([r.server], r.seconds)
            for fs in r.functions:
                if not wanted(fs.name):
                    others.add(fs.name)
                    continue
                per_server["waiting"].add_metric([r.server, fs.name], max(0, fs.queued - fs.running))
                per_server["running"].add_metric([r.server, fs.name], fs.running)
                per_server["workers"].add_metric([r.server, fs.name], fs.available_workers)
        ignored.add_metric([], len(others))
        yield up
        yield took
        yield ignored
        yield from per_server.values()
        if not any(r.up for r in reports):
            return  # no server answered: no queue figures at all, rather than zeros that read as "idle"
        totals = summarize(
            ServerReport(
                r.server,
                r.up,
                [fs for fs in r.functions if wanted(fs.name)],
                None if r.workers is None else [w for w in r.workers if any(map(wanted, w.functions))],
                r.seconds,
            )
            for r in reports
        )
        queued = {fn: totals.waiting[fn] + totals.running[fn] for fn in totals.waiting}
        families = [
            ("gearman_jobs_waiting", "jobs queued and not running, summed over job servers", totals.waiting),
            ("gearman_jobs_running", "jobs running, summed over job servers", totals.running),
            ("gearman_jobs_queued", "jobs waiting or running, summed over job servers (scale on this)", queued),
            ("gearman_workers_available", "distinct workers registered for the function", totals.workers),
        ]
        for name, doc, values in families:
            family = GaugeMetricFamily(name, doc, labels=["function"])
            for fn in sorted(set(values) | set(wanted.exact)):
                if wanted(fn):
                    family.add_metric([fn], values.get(fn, 0))
            yield family


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser(
        "exporter", help=summary, description=__doc__
    )
    p.add_argument("--server", action="append", help="job server HOST:PORT, repeatable [IMGWORKER_SERVERS]")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port for /metrics (default {DEFAULT_PORT})"
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each job server per scrape"
    )
    p.add_argument(
        "--pipelines",
        help="pipeline directory: export each pipeline's functions too [IMGWORKER_PIPELINES]",
    )
    p.add_argument(
        "--function",
        action="append",
        default=[],
        help="also export this function (exact name, or a glob such as 'thumb_*'), repeatable",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # An IMGWORKER_* typo is refused as the worker refuses it (the exporter reads IMGWORKER_SERVERS and
    # IMGWORKER_PIPELINES; the pod's imgworker-config also carries the workers' settings, all known names).
    from_env({k: v for k, v in os.environ.items() if k.startswith("IMGWORKER_")})
    servers = args.server or [
        s.strip() for s in os.environ.get("IMGWORKER_SERVERS", "").split(",") if s.strip()
    ]
    if not servers:
        raise ConfigError("give at least one --server HOST:PORT (or IMGWORKER_SERVERS)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    registry = CollectorRegistry()
    pipelines = args.pipelines or os.environ.get("IMGWORKER_PIPELINES") or None
    if pipelines is not None and not os.path.isdir(pipelines):
        raise ConfigError(f"--pipelines {pipelines!r} is not an existing directory")

    try:
        functions = FunctionFilter([*imgworker_functions(pipelines), *args.function])
    except PipelineError as exc:
        raise ConfigError(f"--pipelines {pipelines!r}: {exc}") from None
    registry.register(GearmanCollector(servers, args.timeout, functions))
    server = HealthServer(args.host, args.port, registry=lambda: registry).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("imgworker.commands.exporter").info(
        "exporting %s on port %d: functions %s", ",".join(servers), server.port,
        ",".join(functions.exact + functions.patterns),
    )
    stop.wait()
    server.stop()
    return 0
