"""A job server that stops answering (SIGSTOP: its kernel still ACKs, so TCP keepalive never fires) stalls nobody.

Two real gearmands, both with work; one is SIGSTOPped. The worker's grabs to it go unanswered, time out after
--job-server-timeout and stop holding job slots: it drains the healthy server's jobs, /readyz names the stopped
one ("not answering"), and once the stopped one resumes the worker reconnects and finishes its jobs. The Python
client's background submit to the stopped server times out waiting for JOB_CREATED and fails over to the other.
(docs/reliability.md, "A job server that stops answering".)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integration.test_metrics import free_port, http_get
from support.fixtures_gearman import run_async, running_worker
from support.fixtures_reliability import NamedWorker, make_tiny_image, wait_for

from imgworker import Client
from imgworker.gearman import Job, SyncClient
from imgworker.testing.gearmand import Gearmand

SERVER_TIMEOUT_S = 2.0
ON_A, ON_B = 300, 40


def _job(root: Path, name: str, i: int) -> dict[str, Any]:
    return {"src": (root / "in" / f"{i % 4}.png").as_uri(), "dst": (root / "out" / f"{name}-{i}.jpg").as_uri(),
            "width": 200}


def _done(root: Path, name: str, n: int) -> int:
    return sum((root / "out" / f"{name}-{i}.jpg").exists() for i in range(n))


def _queue(server: str, root: Path, name: str, n: int, first: int = 0) -> None:
    with SyncClient([server]) as c:
        for i in range(first, first + n):
            c.submit_background("resize", json.dumps(_job(root, name, i)).encode())


def _submit_background_in_thread(client: Client, payload: dict[str, Any]) -> tuple[str, float]:
    """client.submit_background, given up on (a daemon thread left behind) if it blocks: the unfixed client
    waits for JOB_CREATED forever."""
    out: list[Any] = []

    def run() -> None:
        t0 = time.monotonic()
        out.append(client.submit_background("resize", payload))
        out.append(time.monotonic() - t0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(SERVER_TIMEOUT_S + 10)
    assert len(out) == 2, f"submit_background still blocked {SERVER_TIMEOUT_S + 10:g} s after it was called"
    return out[0], out[1]


def test_stopped_job_server_does_not_stall_worker_health_or_client(
    gearmand_factory: Callable[[], Gearmand], worker_factory: Callable[..., NamedWorker], tmp_path: Path
) -> None:
    a, b = gearmand_factory(), gearmand_factory()
    root = tmp_path / "root"
    for i in range(4):
        make_tiny_image(root / "in" / f"{i}.png", size=600, seed=i)
    (root / "out").mkdir()
    port = free_port()
    worker_factory(
        [a.address, b.address], [root], concurrency=2,
        extra=["--metrics-port", str(port), "--job-server-timeout", str(SERVER_TIMEOUT_S), "--batch-slots", "0"],
    ).wait_ready()
    _queue(a.address, root, "a", ON_A)
    # A client connected to both servers before A stops (round robin: A, then B; the next submit goes to A).
    client = Client([a.address, b.address], request_timeout=SERVER_TIMEOUT_S)
    handles = [client.submit_background("resize", _job(root, "c", i)) for i in range(2)]
    assert [h.split("/")[0] for h in handles] == [a.address, b.address], handles
    # The worker is taking A's jobs (so it has grabs outstanding there) when A stops.
    wait_for(lambda: _done(root, "a", ON_A) >= 3, 30, what="the worker to take A's jobs")
    assert a.proc is not None
    _queue(b.address, root, "b", ON_B // 2)  # both servers have work when A stops
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        done_a = _done(root, "a", ON_A)
        assert done_a < ON_A, "A ran out of work before it was stopped: the test proves nothing"
        _queue(b.address, root, "b", ON_B - ON_B // 2, first=ON_B // 2)
        wait_for(lambda: _done(root, "b", ON_B) == ON_B, 30, 0.1, f"all {ON_B} of B's jobs with A stopped")
        # Health: still ready (B serves), and the stopped server is named.
        code, body = wait_for(lambda: (lambda r: r if "not answering" in r[1] else None)(
            http_get(f"http://127.0.0.1:{port}/readyz")), 20, 0.2, "/readyz to report A")
        assert code == 200 and a.address in body.split("not answering:")[1] and b.address in body, body
        # Client: a background submit whose first server is A fails over to B within the request timeout.
        handle, took = _submit_background_in_thread(client, _job(root, "c", 2))
        assert handle.startswith(b.address + "/"), handle
        assert took < SERVER_TIMEOUT_S + 3, f"background submit took {took:.1f} s with A stopped"
        wait_for(lambda: (root / "out" / "c-2.jpg").exists(), 20, 0.1, "the failed-over job to run")
        assert time.monotonic() - stopped_at < 90
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
        client.close()
    # A answers again: the worker reconnects (with backoff) and finishes A's jobs.
    wait_for(lambda: _done(root, "a", ON_A) == ON_A, 90, 0.2, f"all {ON_A} of A's jobs after A resumed")
    code, body = wait_for(lambda: (lambda r: r if "not answering" not in r[1] and r[0] == 200 else None)(
        http_get(f"http://127.0.0.1:{port}/readyz")), 30, 0.2, "/readyz to stop reporting A")
    assert a.address in body and b.address in body, body


def test_an_idle_worker_notices_a_stopped_server_by_its_probe_and_takes_it_back_when_it_answers(
    gearmand_factory: Callable[[], Gearmand], gearman_fn: Callable[[str], str]
) -> None:
    """No job, so no grab outstanding (the worker sleeps after PRE_SLEEP): the ECHO_REQ probe of a connection
    silent for the timeout finds the stopped server all the same, and the first answer after SIGCONT clears it."""
    g = gearmand_factory()
    assert g.proc is not None
    changes: list[tuple[str, bool]] = []

    async def scenario() -> None:
        async def handler(job: Job) -> bytes:
            return b"ok"

        async with running_worker([g.address], {gearman_fn("idle"): handler}, request_timeout=1.0,
                                  on_unresponsive=lambda s, u: changes.append((s, u))) as w:
            await asyncio.sleep(0.5)  # registered, asleep
            os.kill(g.proc.pid, signal.SIGSTOP)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not w.unresponsive and loop.time() < deadline:
                    await asyncio.sleep(0.1)
                assert w.unresponsive == [g.address] and w.connected == []
            finally:
                os.kill(g.proc.pid, signal.SIGCONT)
            await w.wait_connected(timeout=30)
            assert w.unresponsive == []

    run_async(scenario(), 60)
    assert changes[0] == (g.address, True) and changes[-1] == (g.address, False), changes
