"""Metrics, /healthz and /readyz of real worker processes, scraped over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.corpus import photo

from imgworker.backends.cpu import CpuBackend
from imgworker.core.config import WorkerConfig
from imgworker.gearman import SyncClient
from imgworker.stores import FileStore, Stores
from imgworker.testing.gearmand import Gearmand
from imgworker.testing.ports import reserve_port as free_port  # held until the server binds it
from imgworker.worker.runner import WorkerProcess

PHOTO = photo("png_named_jpg")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (sums over prefork pids too)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "out").mkdir(parents=True)
    (root / "in.jpg").write_bytes(PHOTO.read_bytes())
    return root


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGWORKER_", "PROMETHEUS_"))}

    def start(servers: list[str], root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"worker{len(procs)}.log"
        cmd = [sys.executable, "-m", "imgworker", "worker", "--root", str(root), "--log-level", "info", *extra]
        for s in servers:
            cmd += ["--server", s]
        with open(log, "wb") as fh:
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env))
        return procs[-1], log

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def job(root: Path, src: str, dst: str) -> bytes:
    return json.dumps({"src": (root / src).as_uri(), "dst": (root / dst).as_uri(), "width": 64}).encode()


def test_metrics_after_known_jobs(
    gearmand_factory: Callable[[], Gearmand], image_root: Path, start_worker: Any
) -> None:
    g = gearmand_factory()
    port = free_port()
    proc, log = start_worker([g.address], image_root, "--processes", "1", "--metrics-port", str(port))
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="/readyz green")
    with SyncClient([g.address]) as client:
        results = [
            json.loads(client.submit("resize", job(image_root, "in.jpg", f"out/{i}.jpg"), timeout=60)) for i in range(2)
        ]
        missing = json.loads(client.submit("resize", job(image_root, "nope.jpg", "out/x.jpg"), timeout=60))
        bad = json.loads(client.submit("resize@cpu", b"not json", timeout=60))
    assert [r["ok"] for r in results] == [True, True]
    assert missing["error"]["code"] == "SOURCE_NOT_FOUND" and bad["error"]["code"] == "BAD_REQUEST"

    m = scrape(port)
    assert total(m, "imgworker_jobs_total", function="resize", backend="cpu", outcome="ok") == 2
    assert total(m, "imgworker_jobs_total", function="resize", outcome="SOURCE_NOT_FOUND") == 1
    assert total(m, "imgworker_jobs_total", function="resize@cpu", outcome="BAD_REQUEST") == 1
    assert total(m, "imgworker_job_duration_seconds_count") == 4
    for stage in ("read", "decode", "encode", "write"):
        assert total(m, "imgworker_job_stage_duration_seconds_count", stage=stage) == 2, stage
        assert total(m, "imgworker_job_stage_duration_seconds_sum", stage=stage) > 0, stage
    assert total(m, "imgworker_store_read_bytes_total", store="file") == 2 * PHOTO.stat().st_size
    assert total(m, "imgworker_store_written_bytes_total", store="file") == sum(r["bytes"] for r in results)
    assert total(m, "imgworker_busy_seconds_total") > 0
    assert total(m, "imgworker_jobs_in_flight") == 0
    assert total(m, "imgworker_concurrency") == 2
    assert total(m, "imgworker_job_server_up", server=g.address) == 1
    assert total(m, "imgworker_resident_memory_bytes") > 20e6
    assert total(m, "imgworker_vips_memory_highwater_bytes") > 0
    assert abs(total(m, "imgworker_heartbeat_timestamp_seconds") - time.time()) < 30

    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert http_get(f"http://127.0.0.1:{port}/nope")[0] == 404
    probe = [sys.executable, "-m", "imgworker", "health", "--port", str(port)]
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    assert subprocess.run([*probe, "--ready"], capture_output=True, timeout=30).returncode == 0

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    gone = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "no answer" in gone.stdout


def test_prefork_serves_every_child(
    gearmand_factory: Callable[[], Gearmand], image_root: Path, start_worker: Any
) -> None:
    """--processes 2: children write multiprocess files, the supervisor serves their sum and judges each."""
    g = gearmand_factory()
    port = free_port()
    proc, log = start_worker([g.address], image_root, "--processes", "2", "--metrics-port", str(port))
    wait_for(lambda: "2 job loop" in http_get(f"http://127.0.0.1:{port}/healthz")[1], what="two children")
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="/readyz green")
    with SyncClient([g.address]) as client, ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(client.submit, "resize", job(image_root, "in.jpg", f"out/p{i}.jpg"), timeout=60)
            for i in range(6)
        ]
        assert all(json.loads(f.result())["ok"] for f in futures)
    m = scrape(port)
    assert total(m, "imgworker_jobs_total", outcome="ok") == 6
    assert total(m, "imgworker_concurrency") == 4  # livesum over two children
    pids = {dict(ls).get("pid") for (n, ls), v in m.items() if n == "imgworker_job_server_up" and v == 1}
    assert len(pids) == 2 and None not in pids
    # The supervisor's own memory is one more pid of the RSS metric (the pod's memory alert sums them all).
    rss_pids = {dict(ls).get("pid") for (n, ls), v in m.items() if n == "imgworker_resident_memory_bytes" and v > 0}
    assert rss_pids == pids | {str(proc.pid)}, rss_pids
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-3000:]


def test_healthz_red_when_job_loop_blocked(gearmand_factory: Callable[[], Gearmand], tmp_path: Path) -> None:
    """A wedged asyncio loop (here: time.sleep inside a coroutine) must turn /healthz red, then green again."""
    g = gearmand_factory()
    port = free_port()
    config = WorkerConfig(servers=[g.address], roots=[str(tmp_path)], metrics_port=port, metrics_host="127.0.0.1")
    process = WorkerProcess(config.validate(), CpuBackend(), Stores({"file": FileStore([str(tmp_path)])}))
    process.health_max_age = 1.0
    url = f"http://127.0.0.1:{port}/healthz"

    async def scenario() -> tuple[int, str]:
        task = asyncio.create_task(process.run())
        await asyncio.to_thread(wait_for, lambda: http_get(url)[0] == 200, 30, "/healthz green")
        with ThreadPoolExecutor(1) as pool:
            seen = pool.submit(wait_for, lambda: (lambda r: r if r[0] == 503 else None)(http_get(url)), 30, "503")
            deadline = time.monotonic() + 30
            while not seen.done() and time.monotonic() < deadline:
                time.sleep(0.1)  # blocks the event loop on purpose: no heartbeat while this runs
            red = seen.result()
        await asyncio.to_thread(wait_for, lambda: http_get(url)[0] == 200, 30, "/healthz green again")
        process.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        return red  # type: ignore[no-any-return]

    code, body = asyncio.run(scenario())
    assert code == 503 and "job loop silent" in body
    assert http_get(url)[0] == 0  # the server stopped with the worker
