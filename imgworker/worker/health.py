"""HTTP for operators on ``--metrics-port``: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

It runs in its own thread, so it answers while the job loop is busy, and judges the loop from the outside:
the loop stamps ``imgworker_heartbeat_timestamp_seconds`` about once a second (metrics.tick), and /healthz
turns red when a stamp is older than ``max_age``, i.e. the loop is wedged. /readyz is green when the worker
is connected and registered with at least one job server that answers, and not draining; it names the servers
that stopped answering (gearman/worker.py's watchdog, --job-server-timeout). Both read the same samples
/metrics serves, so in prefork mode the supervisor judges every child (one ``pid`` series each) the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as _mp
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from imgworker.core.rss import resident_bytes

log = logging.getLogger("imgworker.worker.health")

ROUTES = ("/metrics", "/healthz", "/readyz")
HEARTBEAT_MAX_AGE_S = 10.0  # a loop tick is ~1 s; 10 s of silence is a wedged loop, not a slow one

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

Verdict = tuple[bool, str]


# Not in metrics.py on purpose: the prefork supervisor serves children's metrics without importing (and so
# without creating) any metric of its own.
def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition_registry() -> CollectorRegistry:
    """The registry /metrics serves: this process's, or every live child's in multiprocess mode."""
    if not multiprocess():
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(SupervisorMemory(_mp.MultiProcessCollector(None)))
    return registry


RSS_METRIC = "imgworker_resident_memory_bytes"


class SupervisorMemory(Collector):
    """The children's metrics plus this (supervisor) process's own resident memory, as one more ``pid`` series
    of imgworker_resident_memory_bytes: the pod's memory alert sums every process the OOM killer counts."""

    def __init__(self, children: Collector) -> None:
        self.children = children

    def collect(self) -> Iterator[Metric]:
        for family in self.children.collect():
            if family.name == RSS_METRIC:
                rss = resident_bytes()
                if rss is not None:
                    family.add_sample(RSS_METRIC, {"pid": str(os.getpid())}, float(rss))
            yield family


def child_exited(pid: int) -> None:
    """Drop a dead prefork child's live* gauges (the supervisor calls this when it reaps one)."""
    if multiprocess():
        _mp.mark_process_dead(pid)


def _samples(registry: CollectorRegistry, name: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of one metric, grouped by process (the ``pid`` label in multiprocess mode, else "self")."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == name:
                out.setdefault(s.labels.get("pid", "self"), []).append((s.labels, s.value))
    return out


def _beats(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    # 0 means "never ticked": a process that only imported imgworker.features.metrics (e.g. the supervisor).
    rows = _samples(registry, "imgworker_heartbeat_timestamp_seconds")
    return {pid: r for pid, r in rows.items() if any(v for _, v in r)}


class WorkerChecks:
    """Liveness and readiness of the worker process(es) whose metrics ``registry()`` collects."""

    def __init__(
        self,
        registry: Callable[[], CollectorRegistry] = exposition_registry,
        max_age: float = HEARTBEAT_MAX_AGE_S,
    ) -> None:
        self.registry = registry
        self.max_age = max_age

    def _silent(self, beats: dict[str, list[tuple[dict[str, str], float]]]) -> str | None:
        """Why some job loop counts as wedged (stopped, stuck), or None."""
        now = time.time()
        stale = {pid: now - max(v for _, v in rows) for pid, rows in beats.items()}
        wedged = {pid: age for pid, age in stale.items() if age > self.max_age}
        if not wedged:
            return None
        detail = ", ".join(f"{pid}: {age:.0f} s" for pid, age in sorted(wedged.items()))
        return f"job loop silent for more than {self.max_age:g} s ({detail})"

    def healthz(self) -> Verdict:
        beats = _beats(self.registry())
        if not beats:
            return False, "no worker process has reported yet"
        silent = self._silent(beats)
        if silent:
            return False, silent
        stalled = stalled_processes(self.registry())
        if stalled:
            return False, "cannot take jobs: " + ", ".join(f"{pid}: {why}" for pid, why in sorted(stalled.items()))
        return True, f"ok: {len(beats)} job loop(s) ticking"

    def readyz(self) -> Verdict:
        registry = self.registry()
        if any(v for rows in _samples(registry, "imgworker_draining").values() for _, v in rows):
            return False, "draining"
        beats = _beats(registry)
        up = _samples(registry, "imgworker_job_server_up")
        mute = {(pid, labels["server"]) for pid, rows in _samples(registry, "imgworker_job_server_unresponsive").items()
                for labels, v in rows if v}
        # A server that stopped answering is not one to be registered with (the worker reconnects to it).
        up = {pid: [(labels, v) for labels, v in rows if (pid, labels["server"]) not in mute]
              for pid, rows in up.items()}
        muted = sorted({server for _, server in mute})
        if not beats:
            return False, "no worker process has reported yet"
        # A stopped or wedged process holds its jobs as running in gearmand until the supervisor replaces it.
        wedged = self._silent(beats)
        if wedged:
            return False, wedged
        stalled = stalled_processes(registry)
        if stalled and len(stalled) >= len(beats):
            return False, "no process can take jobs: " + ", ".join(sorted(set(stalled.values())))
        waiting = [pid for pid in beats if not any(v for _, v in up.get(pid, []))]
        not_answering = f"; not answering: {', '.join(muted)}" if muted else ""
        if waiting:
            return False, (f"not registered with any job server ({len(waiting)} of {len(beats)} processes)"
                           f"{not_answering}")
        servers = sorted({labels["server"] for rows in up.values() for labels, v in rows if v})
        return True, f"ok: registered with {', '.join(servers)}{not_answering}"


_STALL_REASONS = {
    "overrun": "every slot is held by a thread still running past its job's time limit",
    "no_fds": "out of file descriptors",
}


def stalled_processes(registry: CollectorRegistry) -> dict[str, str]:
    """Processes whose every job slot is held (worker.py: overrunning threads, no file descriptors)."""
    out: dict[str, str] = {}
    for pid, rows in _samples(registry, "imgworker_stalled").items():
        reasons = [_STALL_REASONS.get(labels.get("reason", ""), labels.get("reason", "")) for labels, v in rows if v]
        if reasons:
            out[pid] = "; ".join(reasons)
    return out


def always_ok() -> Verdict:
    return True, "ok"


class HealthServer:
    """A small threaded HTTP server; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: Callable[[], CollectorRegistry] = exposition_registry,
        healthz: Callable[[], Verdict] = always_ok,
        readyz: Callable[[], Verdict] = always_ok,
    ) -> None:
        checks = {"/healthz": healthz, "/readyz": readyz}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._send(200, generate_latest(registry()), CONTENT_TYPE_LATEST)
                    elif path in checks:
                        ok, detail = checks[path]()
                        self._send(200 if ok else 503, detail.encode() + b"\n", "text/plain; charset=utf-8")
                    else:
                        self._send(404, f"not found; try {', '.join(ROUTES)}\n".encode(), "text/plain")
                except Exception as exc:  # a probe must get an answer, never a dropped connection
                    log.exception("health endpoint %s failed", path)
                    self._send(500, f"{type(exc).__name__}\n".encode(), "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no log
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="imgworker-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("serving %s on port %d", " ".join(ROUTES), self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
