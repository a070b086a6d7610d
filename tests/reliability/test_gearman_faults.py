"""Fault handling against real gearmand processes: crashes, restarts, failover, killed workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.fixtures_gearman import run_async, running_worker

from imgworker.gearman import Client, ConnectionLost, Job, status
from imgworker.testing.gearmand import Gearmand

FnMaker = Callable[[str], str]
ROOT = Path(__file__).resolve().parents[2]


async def upper(job: Job) -> bytes:
    return job.data.upper()


async def _queued(server: str, function: str, timeout: float = 20.0) -> None:
    """Until gearmand's status lists a job of ``function`` (the submit has reached it)."""
    deadline = time.monotonic() + timeout
    while not any(r.name == function and r.queued for r in await status(server)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {function} job queued in {timeout} s")
        await asyncio.sleep(0.02)


def test_gearmand_restart_same_port(gearmand_factory: Callable[[], Gearmand], gearman_fn: FnMaker) -> None:
    g = gearmand_factory()
    fn, orphan = gearman_fn("up"), gearman_fn("orphan")
    changes: list[bool] = []

    async def main() -> None:
        async with running_worker(
            [g.address], {fn: upper}, reconnect_max_delay=0.3, on_connection_change=lambda s, up: changes.append(up)
        ) as w, Client([g.address]) as c:
            assert await c.submit(fn, b"a") == b"A"
            waiting = asyncio.create_task(c.submit(orphan, b"never served"))
            await _queued(g.address, orphan)
            await asyncio.to_thread(g.kill)
            # No timeout on the submit: only the lost connection can end it (the wait is a ceiling).
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(waiting, 30)
            await asyncio.to_thread(g.restart)
            await w.wait_connected(timeout=10)
            assert await c.submit(fn, b"b", timeout=10) == b"B"  # client reconnects on demand

    run_async(main())
    assert changes[:3] == [True, False, True]


def test_two_servers_one_stopped(gearmand_factory: Callable[[], Gearmand], gearman_fn: FnMaker) -> None:
    a, b = gearmand_factory(), gearmand_factory()
    fn = gearman_fn("ha")
    served: list[str] = []

    async def h(job: Job) -> bytes:
        served.append(job.server)
        return job.data

    async def main() -> None:
        async with running_worker([a.address, b.address], {fn: h}, max_jobs=2, reconnect_max_delay=0.3) as w:
            async with Client([a.address, b.address]) as c:
                await asyncio.gather(*(c.submit(fn, b"%d" % i) for i in range(10)))
                assert set(served) == {a.address, b.address}  # round robin reached both
            await asyncio.to_thread(a.stop)
            for _ in range(200):
                if w.connected == [b.address]:
                    break
                await asyncio.sleep(0.01)
            assert w.connected == [b.address]
            served.clear()
            async with Client([a.address, b.address], connect_timeout=1) as c:
                results = await asyncio.gather(*(c.submit(fn, b"%d" % i, timeout=10) for i in range(10)))
                assert results == [b"%d" % i for i in range(10)]
                h_ = await c.submit_background(fn, b"bg")
                assert h_.startswith(b.address + "/")
            assert served and set(served) == {b.address}

    run_async(main())


def test_killed_worker_job_is_requeued(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("crash")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "peers" / "py_worker.py"), gearmand.address, fn, "60"],
        stdout=subprocess.PIPE, env=env,
    )
    second: list[bytes] = []

    async def finisher(job: Job) -> bytes:
        second.append(job.data)
        return b"second:" + job.data

    async def main() -> None:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.strip() == b"ready"
        async with Client([gearmand.address]) as c:
            job = asyncio.create_task(c.submit(fn, b"payload", timeout=20))
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line.strip() == b"got payload"  # the subprocess holds the job
            proc.kill()
            await asyncio.to_thread(proc.wait)
            async with running_worker([gearmand.address], {fn: finisher}):
                assert await job == b"second:payload"
                # Done, so gone from the server: nothing queued or running that could run it a third time.
                assert not [r for r in await status(gearmand.address) if r.name == fn and (r.queued or r.running)]
            assert second == [b"payload"]  # re-queued once, run once more, one result

    try:
        run_async(main())
    finally:
        proc.kill()
        proc.wait(5)


def test_no_server_available(gearman_fn: FnMaker) -> None:
    from imgworker.gearman import NoServerAvailable

    async def main() -> None:
        async with Client(["127.0.0.1:1", "127.0.0.1:2"], connect_timeout=1) as c:
            with pytest.raises(NoServerAvailable):
                await c.submit(gearman_fn("x"), b"")

    run_async(main())
