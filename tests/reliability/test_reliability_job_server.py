"""Job-server restart and loss: workers reconnect with backoff and re-register, foreground clients get a clear
retryable error and can resubmit, two job servers carry on through the loss of one, background jobs survive a
restart of the durable (sqlite) job server, and with an in-memory queue the jobs a restart lost are found and
resubmitted by the documented policy (docs/reliability.md). SIGKILL with jobs running: test_jobserver_durable.py."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.corpus import photo
from support.fixtures_reliability import (
    WorkerProc,
    fixed_port_gearmand,
    function_status,
    make_tiny_image,
    run_in_thread,
    wait_for,
)

from imgworker import Client
from imgworker.client import default_unique
from imgworker.core.errors import Unavailable
from imgworker.testing.gearmand import Gearmand

SOURCE = photo("baseline")
SLOW = {"width": 4000, "height": 4000, "fit": "fill", "format": "jpeg", "quality": 80}


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with fixed_port_gearmand() as g:
        yield g


def _root(tmp_path: Path, n: int = 1) -> Path:
    root = tmp_path / "root"
    for i in range(n):
        make_tiny_image(root / "in" / f"{i}.png", seed=i)
    (root / "out").mkdir(parents=True, exist_ok=True)
    return root


def _job(root: Path, i: int, dst: str | None = None) -> dict[str, Any]:
    return {"src": (root / "in" / f"{i % 4}.png").as_uri(), "dst": (root / "out" / (dst or f"{i}.jpg")).as_uri(),
            "width": 32}


def test_worker_reconnects_with_backoff_and_reregisters(server: Gearmand, worker_factory: Callable[..., WorkerProc],
                                                        tmp_path: Path) -> None:
    root = _root(tmp_path)
    # One Gearman session (no batch coordinator) so the log holds one backoff sequence.
    w = worker_factory([server.address], [root], extra=["--batch-slots", "0"]).wait_ready()
    server.kill()
    # Down until the worker has retried several times (its log says each retry and the delay before it).
    wait_for(lambda: len(re.findall(r"connect failed .*; retry in", w.log())) >= 4, 60, 0.05, "4 reconnect attempts")
    server.start()  # same port (fixed_port_gearmand)
    w.wait_ready(timeout=30)
    with Client([server.address], timeout=30) as client:
        assert client.run("resize", _job(root, 0)).ok
    delays = [float(d) for d in re.findall(r"connect failed .*; retry in ([0-9.]+)s", w.log())]
    assert len(delays) >= 3, w.log()[-2000:]
    # Exponential backoff with jitter in [0.5, 1] x 0.1 * 2^n: each delay is at least the previous one.
    assert delays == sorted(delays) and delays[-1] > delays[0], delays
    assert w.alive()


def test_foreground_client_gets_clear_error_on_server_loss_and_can_resubmit(
    server: Gearmand, worker_factory: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    root = _root(tmp_path)
    worker_factory([server.address], [root, SOURCE.parent]).wait_ready()
    payload = {"src": SOURCE.as_uri(), "dst": (root / "out" / "big.jpg").as_uri(), **SLOW}
    t, outcome = run_in_thread([server.address], "resize", payload, timeout=60, catch=Unavailable)
    wait_for(lambda: getattr(function_status(server.address, "resize"), "running", 0) == 1, 20, 0.02, "job running")
    server.kill()
    t.join(30)  # a ceiling; the client's own timeout (120 s) would say "did not finish", not "connection lost"
    assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
    err = outcome[0]
    assert err.code == "UNAVAILABLE" and err.retryable and "connection lost" in err.message
    # While the server is down a submit fails fast with the same clear error.
    with Client([server.address], timeout=5) as client, pytest.raises(Unavailable):
        client.run("resize", _job(root, 0))
    server.start()
    with Client([server.address], timeout=120) as client:
        result = client.run("resize", payload)  # the documented reaction: resubmit the same job
    assert result.ok and (result.width, result.height) == (4000, 4000)


def test_two_job_servers_carry_on_through_the_loss_of_one(
    worker_factory: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    root = _root(tmp_path, 4)
    with fixed_port_gearmand() as g1, fixed_port_gearmand() as g2:
        _two_servers(g1, g2, worker_factory, root)


def _two_servers(g1: Gearmand, g2: Gearmand, worker_factory: Callable[..., WorkerProc], root: Path) -> None:
    servers = [g1.address, g2.address]
    workers = [worker_factory(servers, [root]).wait_ready() for _ in range(2)]
    with Client(servers, timeout=30) as client:
        for i in range(10):
            assert client.run("resize", _job(root, i)).ok
        g1.kill()
        # Every job after the loss completes: the client skips the dead server, the workers serve g2.
        for i in range(10, 40):
            assert client.run("resize", _job(root, i)).ok
        # The dead server comes back; workers re-register there and it takes jobs again.
        g1.start()
        for w in workers:
            w.wait_ready(server=g1.address)
        for i in range(40, 50):
            assert client.run("resize", _job(root, i)).ok
    with Client([g1.address], timeout=30) as client:
        assert client.run("resize", _job(root, 50)).ok
    for i in range(51):
        assert pyvips.Image.new_from_file(str(root / "out" / f"{i}.jpg")).width == 32
    assert all(w.alive() for w in workers)


def resubmit_missing(client: Client, jobs: list[dict[str, Any]]) -> int:
    """The documented policy for background jobs: a job is done when its destination exists; resubmit every
    other one with its payload-derived unique id (a job still queued coalesces, a lost one is queued again)."""
    missing = [job for job in jobs if not Path(job["dst"].removeprefix("file://")).exists()]
    for job in missing:
        client.submit_background("resize", job, unique=default_unique(job))
    return len(missing)


@pytest.mark.parametrize("persistent", [True, False], ids=["sqlite-queue", "in-memory-queue"])
def test_background_jobs_through_a_restart(persistent: bool, worker_factory: Callable[..., WorkerProc],
                                           tmp_path: Path) -> None:
    """Durable queue: every queued job is still there after the restart and runs. In-memory queue: the restart
    loses them all, and the resubmission policy brings every one back."""
    root = _root(tmp_path, 4)
    jobs = [_job(root, i) for i in range(20)]
    with fixed_port_gearmand(persistent=persistent) as server:
        with Client([server.address]) as client:
            for job in jobs:
                client.submit_background("resize", job)
            # A duplicate submission of a queued job coalesces: still 20 queued.
            client.submit_background("resize", jobs[0])
        assert getattr(function_status(server.address, "resize"), "queued", 0) == 20
        server.restart()
        assert getattr(function_status(server.address, "resize"), "queued", 0) == (20 if persistent else 0)
        w = worker_factory([server.address], [root]).wait_ready()
        with Client([server.address]) as client:
            if persistent:
                wait_for(lambda: all(Path(j["dst"][7:]).exists() for j in jobs), 60, 0.1, "queued jobs to finish")
            else:
                time.sleep(0.5)
                assert w.completed_lines("/out/") == [], "nothing was left to run: the restart lost the queue"
                assert resubmit_missing(client, jobs) == 20
                wait_for(lambda: all(Path(j["dst"][7:]).exists() for j in jobs), 60, 0.1, "resubmitted jobs")
            assert resubmit_missing(client, jobs) == 0
        # The log line follows the destination's rename by a moment: wait for it, then count exactly.
        wait_for(lambda: len(w.completed_lines("/out/")) >= 20, 10, 0.05, "the 20 completion lines")
        assert len(w.completed_lines("/out/")) == 20
