"""`imgworker exporter` against two real gearmands holding known queues (and one server that is down)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration.test_metrics import free_port, http_get, scrape, total, wait_for

from imgworker.commands.exporter import FunctionFilter, ServerReport, imgworker_functions, summarize
from imgworker.gearman import FunctionStatus, Job, SyncClient, Worker, WorkerInfo, status
from imgworker.testing.gearmand import Gearmand

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def holding_worker() -> Iterator[Callable[[list[str], str], threading.Event]]:
    """A Gearman worker on its own loop thread whose handler holds each job until released."""
    stops: list[Callable[[], None]] = []

    def start(servers: list[str], function: str) -> threading.Event:
        release = threading.Event()
        loop = asyncio.new_event_loop()
        worker = Worker(servers, client_id="holding-worker", max_jobs=1)

        async def handle(job: Job) -> bytes:
            await asyncio.to_thread(release.wait, 60)
            return b"done"

        worker.register(function, handle)
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
        thread.start()

        def stop() -> None:
            release.set()
            asyncio.run_coroutine_threadsafe(worker.close(), loop).result(10)
            thread.join(10)

        stops.append(stop)
        return release

    yield start
    for stop in stops:
        stop()


def running(server: str, function: str) -> int:
    return next((r.running for r in asyncio.run(status(server)) if r.name == function), 0)


def test_exporter_sums_queues_across_servers(
    gearmand_factory: Callable[[], Gearmand],
    gearman_fn: Callable[[str], str],
    holding_worker: Callable[..., threading.Event],
) -> None:
    g1, g2 = gearmand_factory(), gearmand_factory()
    down = f"127.0.0.1:{free_port()}"
    queued, other, held = gearman_fn("queued"), gearman_fn("other"), gearman_fn("held")
    with SyncClient([g1.address]) as c1, SyncClient([g2.address]) as c2:
        for i in range(5):
            c1.submit_background(queued, b"{}", unique=f"a{i}")
        for i in range(3):
            c2.submit_background(queued, b"{}", unique=f"b{i}")
        for i in range(2):
            c1.submit_background(other, b"{}", unique=f"c{i}")
        for i in range(2):
            c1.submit_background(held, b"{}", unique=f"d{i}")
    # One worker registered with both servers, holding one `held` job: running 1, waiting 1, 1 worker.
    holding_worker([g1.address, g2.address], held)
    wait_for(lambda: running(g1.address, held) == 1, what="held job running")

    port = free_port()
    cmd = [sys.executable, "-m", "imgworker", "exporter", "--port", str(port), "--timeout", "2"]
    cmd += ["--function", queued, "--function", other, "--function", held]
    for s in (g1.address, g2.address, down):
        cmd += ["--server", s]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="exporter up")
        m = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out

    assert total(m, "gearman_jobs_waiting", function=queued) == 8
    assert total(m, "gearman_jobs_running", function=queued) == 0
    assert total(m, "gearman_workers_available", function=queued) == 0
    assert total(m, "gearman_jobs_waiting", function=other) == 2
    assert total(m, "gearman_jobs_waiting", function=held) == 1  # status "total" 2 includes the running one
    assert total(m, "gearman_jobs_running", function=held) == 1
    assert total(m, "gearman_workers_available", function=held) == 1  # not 2: same worker on both servers
    assert total(m, "gearman_server_jobs_waiting", server=g1.address, function=queued) == 5
    assert total(m, "gearman_server_jobs_waiting", server=g2.address, function=queued) == 3
    assert total(m, "gearman_up", server=g1.address) == 1
    assert total(m, "gearman_up", server=g2.address) == 1
    assert total(m, "gearman_up", server=down) == 0


def test_summarize_counts_anonymous_workers_per_connection() -> None:
    """Workers without a client id cannot be matched across servers; when `workers` fails, use `status`."""
    a = ServerReport(
        "a:1",
        True,
        [FunctionStatus("f", 4, 1, 2)],
        [WorkerInfo(1, "10.0.0.1", "-", ("f",)), WorkerInfo(2, "10.0.0.2", "w2", ("f",))],
    )
    b = ServerReport(
        "b:1",
        True,
        [FunctionStatus("f", 1, 0, 2)],
        [WorkerInfo(1, "10.0.0.1", "-", ("f",)), WorkerInfo(7, "10.0.0.2", "w2", ("f",))],
    )
    c = ServerReport("c:1", True, [FunctionStatus("f", 0, 0, 3)], None)
    d = ServerReport("d:1", False)
    t = summarize([a, b, c, d])
    assert (t.waiting["f"], t.running["f"], t.workers["f"]) == (4, 1, 2 + 1 + 3)


def test_exporter_needs_a_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgworker", "exporter"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2 and "--server" in proc.stderr


def run_exporter(servers: list[str], *extra: str) -> Iterator[int]:
    port = free_port()
    cmd = [sys.executable, "-m", "imgworker", "exporter", "--port", str(port), "--timeout", "2", *extra]
    for s in servers:
        cmd += ["--server", s]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="exporter up")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def series(m: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {key for key in m if key[0].startswith("gearman_") and key[0] != "gearman_scrape_duration_seconds"}


def test_exporter_exports_only_imgworker_functions(gearmand_factory: Callable[[], Gearmand]) -> None:
    """Client-made names (30 per-request notify functions, batch replies, another app) add no series."""
    g = gearmand_factory()
    pipelines = str(REPO / "pipelines")
    with SyncClient([g.address]) as c:
        c.submit_background("resize", b"{}", unique="r1")
        c.submit_background("avatar", b"{}", unique="a1")
        c.submit_background("web@gpu", b"{}", unique="w1")
        gen = run_exporter([g.address], "--pipelines", pipelines, "--function", "thumb_*")
        port = next(gen)
        before = scrape(port)
        for i in range(30):
            c.submit_background(f"notify_{i:04d}_job_done", b"{}", unique=f"n{i}")
        c.submit_background("batch_3f2a_reply", b"{}", unique="b1")
        c.submit_background("otherapp_send_mail", b"{}", unique="o1")
        c.submit_background("thumb_x", b"{}", unique="t1")  # matches the glob: exported
        after = scrape(port)
        gen.close()
    names = {dict(labels).get("function") for _, labels in series(after)} - {None}
    expected = set(imgworker_functions(pipelines))
    # batch, and resize, info and every shipped pipeline, each plain and @cpu / @gpu (all run on GPU workers too)
    assert expected == {"batch"} | {f"{name}{tag}" for name in ("resize", "info", "avatar", "product_zoom",
                                                                 "thumbnail", "web") for tag in ("", "@cpu", "@gpu")}
    # docs/operations.md gives the figure
    assert f"{len(expected)} function names with the shipped pipelines" in (REPO / "docs" / "operations.md").read_text()
    assert names == expected | {"thumb_x"}
    # 32 new client-made names add nothing; thumb_x (matched by the glob) adds its 4 totals and 3 per-server series.
    assert len(series(after)) == len(series(before)) + 7
    assert total(after, "gearman_functions_ignored") == 32 and total(before, "gearman_functions_ignored") == 0
    # Exact names are exported before any job or worker named them, so sums over them are never empty.
    assert total(after, "gearman_jobs_queued", function="thumbnail@gpu") == 0
    assert total(after, "gearman_workers_available", function="resize@gpu") == 0
    assert total(after, "gearman_jobs_queued", function="resize") == 1
    assert total(after, "gearman_jobs_queued", function="avatar") == 1
    assert total(after, "gearman_server_jobs_waiting", server=g.address, function="web@gpu") == 1


def test_exporter_without_any_server_exports_no_queue_figures(gearmand_factory: Callable[[], Gearmand]) -> None:
    """Every job server down: no gearman_jobs_* at all (absent, so KEDA falls back), never zeros."""
    gen = run_exporter([f"127.0.0.1:{free_port()}"])
    m = scrape(next(gen))
    gen.close()
    assert total(m, "gearman_up") == 0
    assert not [k for k in m if k[0].startswith("gearman_jobs_") or k[0] == "gearman_workers_available"]


def test_function_filter() -> None:
    f = FunctionFilter(["resize", "web@*"])
    assert f("resize") and f("web@gpu") and not f("resize2") and not f("notify_1") and not f("batch")
    assert f.exact == ["resize"] and f.patterns == ["web@*"]


def test_exporter_refuses_pipelines_the_workers_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\nsteps: [nope]\n")
    for where, why in ((tmp_path, "unknown step 'nope'"), (tmp_path / "missing", "not an existing directory")):
        proc = subprocess.run(
            [sys.executable, "-m", "imgworker", "exporter", "--server", "127.0.0.1:1", "--pipelines", str(where)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and "--pipelines" in proc.stderr and why in proc.stderr, proc.stderr
