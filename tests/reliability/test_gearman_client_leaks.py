"""A long-running Client must not keep routing entries for submits that gave up (timeout, cancel)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from support.fixtures_gearman import run_async

from imgworker.gearman import Client, GearmanTimeout
from imgworker.testing.gearmand import Gearmand

FnMaker = Callable[[str], str]
N = 100


async def _registered(c: Client, server: str, n: int, deadline: float = 10.0) -> int:
    """Wait until ``n`` foreground jobs are filed by handle (JOB_CREATED read); returns the count seen."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    seen = 0
    while loop.time() < end:
        cc = c._conns.get(server)
        seen = sum(len(ws) for ws in cc.jobs.values()) if cc is not None else 0
        if seen >= n:
            break
        await asyncio.sleep(0.01)
    return seen


def test_timed_out_submits_leave_no_waiters(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("nobody")  # no worker serves it: WORK_COMPLETE never comes

    async def main() -> None:
        async with Client([gearmand.address]) as c:
            tasks = [asyncio.create_task(c.submit(fn, b"x", timeout=2.0)) for _ in range(N)]
            # All were filed under their handles before the timeout: the leak path is really exercised.
            assert await _registered(c, gearmand.address, N, deadline=1.5) == N
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, GearmanTimeout) for r in results), results[:3]
            cc = c._conns[gearmand.address]
            assert cc.jobs == {}
            assert not cc.pending
            # The connection is still usable after the timeouts.
            handle = await c.submit_background(fn, b"y")
            assert (await c.get_status(handle, timeout=5)).known

    run_async(main())


def test_cancelled_submits_leave_no_waiters(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("nobody")

    async def main() -> None:
        async with Client([gearmand.address]) as c:
            tasks = [asyncio.create_task(c.submit(fn, b"x")) for _ in range(N)]
            assert await _registered(c, gearmand.address, N) == N
            for t in tasks:
                t.cancel()
            for t in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await t
            assert c._conns[gearmand.address].jobs == {}

    run_async(main())


def test_shared_unique_keeps_the_other_waiter(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    """Two submits coalesced on one handle (same unique): cancelling one leaves the other filed."""
    fn = gearman_fn("nobody")

    async def main() -> None:
        async with Client([gearmand.address]) as c:
            a = asyncio.create_task(c.submit(fn, b"x", unique="same"))
            b = asyncio.create_task(c.submit(fn, b"x", unique="same"))
            assert await _registered(c, gearmand.address, 2) == 2
            jobs = c._conns[gearmand.address].jobs
            assert len(jobs) == 1  # one handle, two waiters
            a.cancel()
            with pytest.raises(asyncio.CancelledError):
                await a
            assert [len(ws) for ws in jobs.values()] == [1]
            b.cancel()
            with pytest.raises(asyncio.CancelledError):
                await b
            assert jobs == {}

    run_async(main())
