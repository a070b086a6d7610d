"""The ScaledObjects' queries against a REAL Prometheus scraping the REAL exporter, KEDA's formula on the answers.

Two real gearmands hold real queued and running jobs (real Gearman workers hold jobs as "running"); `imgworker
exporter` (a subprocess, as in the pod: --pipelines) polls them; Debian's Prometheus scrapes it every second
and loads the PrometheusRule's alerts. Each ScaledObject's PromQL is read from k8s/ and run through Prometheus'
HTTP API; KEDA's decision is then applied to the answers (``keda_replicas``). Four scenarios, in order, on the
same servers: a light load, a burst, a drain, a lost exporter. The decisions are printed and asserted.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from integration.test_metrics import free_port, http_get, wait_for
from support.tools import needs_tool

from imgworker.gearman import Job, SyncClient, Worker, status
from imgworker.testing.gearmand import Gearmand

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = needs_tool("prometheus", "apt-get install prometheus", path="/usr/bin/prometheus")

# Functions as the workers register them (imgworker.core.functions.registered for each backend's pipelines).
GPU_FUNCTIONS = ["resize", "resize@gpu", "thumbnail", "thumbnail@gpu", "web", "web@gpu"]
CPU_FUNCTIONS = ["resize", "resize@cpu", "avatar", "avatar@cpu", "product_zoom", "product_zoom@cpu"]
CPU_ONLY = "resize@cpu"  # work only CPU workers take (every shipped pipeline also runs on GPU workers)


def scaled_objects() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ScaledObject":
                found[doc["metadata"]["name"]] = doc
    return found


def prometheus_rules() -> dict[str, Any]:
    for doc in yaml.safe_load_all((K8S / "base" / "monitoring.yaml").read_text()):
        if doc and doc.get("kind") == "PrometheusRule":
            return {"groups": doc["spec"]["groups"]}
    raise AssertionError("no PrometheusRule in k8s/base/monitoring.yaml")


def keda_replicas(spec: dict[str, Any], values: list[float | None]) -> int:
    """KEDA (>= 2.19, as the manifests state) with the HPA it drives, for Prometheus triggers (AverageValue).

    Per trigger: an empty answer reads 0 when ignoreNullValues is "true" (KEDA's default), else it is a scaler
    error; an erroring trigger with `fallback` reports fallback.replicas * threshold once failureThreshold polls
    failed (all of ours do here), without fallback it reports nothing. Active when any metric > its
    activationThreshold; inactive -> minReplicaCount (0 after cooldownPeriod). Active -> the HPA's
    max over triggers of ceil(metric / threshold), within [max(minReplicaCount, 1), maxReplicaCount].
    """
    fallback = spec.get("fallback")
    metrics: list[tuple[float, float, float]] = []
    for trigger, value in zip(spec["triggers"], values, strict=True):
        meta = trigger["metadata"]
        threshold, activation = float(meta["threshold"]), float(meta.get("activationThreshold", "0"))
        if value is None:
            if meta.get("ignoreNullValues", "true") == "true":
                value = 0.0
            elif fallback:
                value = fallback["replicas"] * threshold
            else:
                continue
        metrics.append((value, threshold, activation))
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not any(value > activation for value, _, activation in metrics):
        return int(low)
    desired = max(math.ceil(value / threshold) for value, threshold, _ in metrics)
    return int(min(high, max(low, 1, desired)))


class Prometheus:
    def __init__(self, directory: Path, exporter_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [
                {"job_name": "imgworker-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        (directory / "rules.yaml").write_text(yaml.safe_dump(prometheus_rules()))
        self.log = open(directory / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
        wait_for(lambda: http_get(self.url("/-/ready"))[0] == 200 or self.proc.poll() is not None, what="prometheus")
        assert self.proc.poll() is None, (directory / "prometheus.log").read_text()[-3000:]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(self.url(path) + "?" + urllib.parse.urlencode(params), timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> float | None:
        """One value (the ScaledObjects' queries return one series), None for an empty answer."""
        result = self.api("/api/v1/query", query=promql)["result"]
        if not result:
            return None
        assert len(result) == 1, f"{promql!r} returned {len(result)} series; KEDA needs one"
        return float(result[0]["value"][1])

    def alert_state(self, name: str) -> str | None:
        alerts = self.api("/api/v1/alerts")["alerts"]
        return next((a["state"] for a in alerts if a["labels"]["alertname"] == name), None)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Gate:
    """How many jobs a test worker may finish; it holds the others as running until allowed."""

    def __init__(self) -> None:
        self.allowed = 0
        self.finished = 0
        self.closed = False
        self.cond = threading.Condition()

    def allow(self, n: int) -> None:
        with self.cond:
            self.allowed += n
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def pass_one(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.finished < self.allowed, 120)
            self.finished += 1


@pytest.fixture
def start_worker() -> Iterator[Callable[[list[str], str, list[str], int], Gate]]:
    """A real Gearman worker (own loop thread) for these functions, with `slots` jobs at once, held by a Gate."""
    stops: list[Callable[[], None]] = []

    def start(servers: list[str], client_id: str, functions: list[str], slots: int) -> Gate:
        gate = Gate()
        loop = asyncio.new_event_loop()
        worker = Worker(servers, client_id=client_id, max_jobs=slots)

        async def handle(job: Job) -> bytes:
            await asyncio.to_thread(gate.pass_one)
            return b"{}"

        for fn in functions:
            worker.register(fn, handle)
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
        thread.start()

        def stop() -> None:
            gate.close()
            asyncio.run_coroutine_threadsafe(worker.close(), loop).result(30)
            thread.join(30)

        stops.append(stop)
        return gate

    yield start
    for stop in stops:
        stop()


def held(servers: list[str], function: str) -> tuple[int, int]:
    """(waiting, running) for a function summed over the servers, straight from gearmand's admin status."""
    waiting = running = 0
    for server in servers:
        for fs in asyncio.run(status(server)):
            if fs.name == function:
                waiting += fs.queued - fs.running
                running += fs.running
    return waiting, running


@dataclass
class Decision:
    scenario: str
    values: dict[str, list[float | None]]
    replicas: dict[str, int]

    def line(self) -> str:
        parts = [
            f"{name} {self.replicas[name]} (metric {', '.join('empty' if v is None else f'{v:g}' for v in vals)})"
            for name, vals in self.values.items()
        ]
        return f"{self.scenario:<8} " + "; ".join(parts)


def decide(prom: Prometheus, scenario: str) -> Decision:
    objects = scaled_objects()
    values = {
        name: [prom.query(t["metadata"]["query"]) for t in so["spec"]["triggers"]] for name, so in objects.items()
    }
    replicas = {name: keda_replicas(objects[name]["spec"], values[name]) for name in objects}
    decision = Decision(scenario, values, replicas)
    print("SCALE", decision.line())
    return decision


def test_keda_decisions_against_real_prometheus(
    gearmand_factory: Callable[[], Gearmand],
    start_worker: Callable[[list[str], str, list[str], int], Gate],
    tmp_path: Path,
) -> None:
    g1, g2 = gearmand_factory(), gearmand_factory()
    servers = [g1.address, g2.address]
    exporter_port = free_port()
    cmd = [sys.executable, "-m", "imgworker", "exporter", "--port", str(exporter_port), "--timeout", "2"]
    cmd += ["--pipelines", str(REPO / "pipelines"), "--server", g1.address, "--server", g2.address]
    exporter = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prom = Prometheus(tmp_path, exporter_port)
    decisions: list[Decision] = []
    try:
        wait_for(lambda: prom.query('up{job="imgworker-exporter"}') == 1, what="exporter scraped")

        def seen(function: str, queued: float, metric: str = "gearman_jobs_queued") -> None:
            wait_for(lambda: prom.query(f'{metric}{{function="{function}"}}') == queued, what=f"{function} {queued}")

        # 1. Light load: one `resize` job, no worker registered yet (the staging overlay, or before GPU pods).
        with SyncClient([g1.address]) as c:
            c.submit_background("resize", b"{}", unique="light")
        seen("resize", 1)
        decisions.append(decide(prom, "light"))

        # 2. Burst: 300 resize + 10 resize@cpu (cpu-only work) over both servers; one GPU worker process
        #    registered, running 4 of them.
        gpu = start_worker(servers, "gpu-0", GPU_FUNCTIONS, 4)
        with SyncClient([g1.address]) as c1, SyncClient([g2.address]) as c2:
            for i in range(299):
                (c1 if i % 2 else c2).submit_background("resize", b"{}", unique=f"burst{i}")
            for i in range(10):
                (c1 if i % 2 else c2).submit_background(CPU_ONLY, b"{}", unique=f"cpu{i}")
        wait_for(lambda: held(servers, "resize") == (296, 4), what="4 resize running")
        seen("resize", 300)
        seen(CPU_ONLY, 10)
        seen("resize@gpu", 1, "gearman_workers_available")
        decisions.append(decide(prom, "burst"))

        # 3. Drain: the GPU worker finishes all but the last 4 resize jobs (running, none waiting); a CPU worker
        #    runs 2 resize@cpu jobs, 8 wait. Running jobs count: workers that keep up keep their pods.
        gpu.allow(296)
        wait_for(lambda: held(servers, "resize") == (0, 4), timeout=60, what="resize drained to 4 running")
        start_worker(servers, "cpu-0", CPU_FUNCTIONS, 2)  # after the drain: it would take resize jobs too
        wait_for(lambda: held(servers, CPU_ONLY) == (8, 2), what="2 resize@cpu running")
        seen("resize", 4)
        seen(CPU_ONLY, 10)
        decisions.append(decide(prom, "drain"))

        # 4. Lost exporter: its series go stale at the next failed scrape; nothing may read as "no work".
        exporter.send_signal(signal.SIGKILL)
        exporter.wait(30)
        wait_for(lambda: prom.query('up{job="imgworker-exporter"}') == 0, what="exporter target down")
        decisions.append(decide(prom, "lost"))
        wait_for(lambda: prom.alert_state("ImgworkerExporterAbsent") in ("pending", "firing"), what="alert")
    finally:
        if exporter.poll() is None:
            exporter.send_signal(signal.SIGTERM)
            exporter.wait(30)
        prom.stop()

    table = {d.scenario: d.replicas for d in decisions}
    print("\n".join(["KEDA decisions (replicas):", *(d.line() for d in decisions)]))
    assert table["light"] == {"imgworker-cpu": 1, "imgworker-gpu": 1}  # one job starts a CPU pod from 0
    assert table["burst"] == {"imgworker-cpu": 20, "imgworker-gpu": 4}  # both at their maximum
    # 4 resize on the GPU (within its 32 slots) + 10 resize@cpu only CPU workers serve: 10 / 2 slots -> 5 pods,
    # not 0 (stranded) as when only waiting jobs over an activation of 200 counted.
    assert table["drain"] == {"imgworker-cpu": 5, "imgworker-gpu": 1}
    # Lost signal: errors, so each holds its fallback instead of reading 0 and scaling to its minimum.
    assert table["lost"] == {"imgworker-cpu": 2, "imgworker-gpu": 2}
    assert all(v is None for v in decisions[-1].values["imgworker-cpu"] + decisions[-1].values["imgworker-gpu"])


def test_keda_model() -> None:
    """The formula itself, on numbers worked by hand (KEDA docs: 20 messages / threshold 5 -> 4 replicas)."""
    spec = {"minReplicaCount": 0, "maxReplicaCount": 10, "triggers": [{"metadata": {"threshold": "5"}}]}
    assert keda_replicas(spec, [20.0]) == 4
    assert keda_replicas(spec, [0.0]) == 0 and keda_replicas(spec, [0.5]) == 1 and keda_replicas(spec, [99.0]) == 10
    spec["triggers"][0]["metadata"]["activationThreshold"] = "3"
    assert keda_replicas(spec, [3.0]) == 0 and keda_replicas(spec, [4.0]) == 1
    assert keda_replicas(spec, [None]) == 0  # ignoreNullValues defaults to true: empty reads 0
    spec["triggers"][0]["metadata"]["ignoreNullValues"] = "false"
    assert keda_replicas(spec, [None]) == 0  # an error without fallback: no metric, no activity
    spec["fallback"] = {"failureThreshold": 3, "replicas": 2}
    assert keda_replicas(spec, [None]) == 2
