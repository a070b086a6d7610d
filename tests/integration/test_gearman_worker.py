"""Our Client against our Worker through a real gearmand."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest
from support.fixtures_gearman import run_async, running_worker

from imgworker.gearman import (
    Client,
    GearmanTimeout,
    Job,
    JobFailed,
    SyncClient,
    admin_command,
    status,
    version,
    workers,
)
from imgworker.testing.gearmand import Gearmand

FnMaker = Callable[[str], str]


async def upper(job: Job) -> bytes:
    return job.data.upper()


async def echo(job: Job) -> bytes:
    return job.data


async def boom(job: Job) -> bytes:
    raise ValueError("handler exploded")


def test_round_trip_binary_utf8_and_large(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    up, ec = gearman_fn("up"), gearman_fn("echo")

    async def main() -> None:
        async with running_worker([gearmand.address], {up: upper, ec: echo}) as w, Client(
            [gearmand.address]
        ) as c:
            assert await c.submit(up, b"hello") == b"HELLO"
            text = "größe ✓ 画像".encode()
            assert await c.submit(ec, text) == text
            allbytes = bytes(range(256)) * 4
            assert await c.submit(ec, allbytes) == allbytes
            big = random.randbytes(5 * 1024 * 1024 + 3)
            assert await c.submit(ec, big, timeout=30) == big
            assert await c.submit(ec, b"") == b""
            assert w.jobs_done == 5

    run_async(main())


def test_failure_status_data_warning(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    bad, prog = gearman_fn("bad"), gearman_fn("prog")

    async def progress(job: Job) -> bytes:
        await job.send_status(1, 3)
        await job.send_data(b"chunk")
        await job.send_warning(b"careful")
        await job.send_status(3, 3)
        return b"ok"

    async def main() -> None:
        async with running_worker([gearmand.address], {bad: boom, prog: progress}) as w, Client(
            [gearmand.address]
        ) as c:
            with pytest.raises(JobFailed):
                await c.submit(bad, b"x")
            assert w.jobs_failed == 1
            seen: list[object] = []
            r = await c.submit(
                prog, b"", on_status=lambda n, d: seen.append((n, d)), on_data=seen.append,
                on_warning=seen.append,
            )
            assert r == b"ok"
            assert seen == [(1, 3), b"chunk", b"careful", (3, 3)]

    run_async(main())


def test_thousand_concurrent_jobs_one_connection(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("slowecho")

    async def jittery(job: Job) -> bytes:
        await asyncio.sleep(random.random() * 0.004)  # results return out of order
        return b"r:" + job.data

    async def main() -> None:
        async with running_worker([gearmand.address], {fn: jittery}, max_jobs=16), Client(
            [gearmand.address]
        ) as c:
            payloads = [f"job-{i}-{random.random()}".encode() for i in range(1000)]
            results = await asyncio.gather(*(c.submit(fn, p) for p in payloads))
            assert results == [b"r:" + p for p in payloads]
            assert len(c._conns) == 1

    run_async(main(), timeout=60)


def test_max_jobs_bounds_concurrency(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("conc")
    peak = 0
    current = 0

    async def h(job: Job) -> bytes:
        nonlocal peak, current
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.02)
        current -= 1
        return b""

    async def main() -> None:
        async with running_worker([gearmand.address], {fn: h}, max_jobs=3), Client([gearmand.address]) as c:
            await asyncio.gather(*(c.submit(fn, b"") for _ in range(30)))

    run_async(main())
    assert peak == 3


def test_background_and_status(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("bg")
    release = asyncio.Event()

    async def h(job: Job) -> bytes:
        await job.send_status(2, 5)
        await release.wait()
        return b""

    async def main() -> None:
        async with Client([gearmand.address]) as c:
            handle = await c.submit_background(fn, b"x", priority="high")
            assert handle.startswith(gearmand.address + "/H:")
            st = await c.get_status(handle)
            assert st.known and not st.running
            async with running_worker([gearmand.address], {fn: h}):
                for _ in range(200):
                    st = await c.get_status(handle)
                    if st.numerator == 2:
                        break
                    await asyncio.sleep(0.01)
                assert (st.known, st.running, st.numerator, st.denominator) == (True, True, 2, 5)
                release.set()
                for _ in range(200):
                    st = await c.get_status(handle)
                    if not st.known:
                        break
                    await asyncio.sleep(0.01)
                assert not st.known

    run_async(main())


def test_timeout_raises(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    async def main() -> None:
        async with Client([gearmand.address]) as c:
            with pytest.raises(GearmanTimeout, match=r"did not finish within 0\.3s"):
                await c.submit(gearman_fn("nobody"), b"x", timeout=0.3)

    run_async(main())


def test_drain_finishes_in_flight_and_takes_no_more(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("drain")
    started: list[bytes] = []

    async def h(job: Job) -> bytes:
        started.append(job.data)
        await asyncio.sleep(0.3)
        return b"done"

    async def main() -> None:
        async with Client([gearmand.address]) as c:
            async with running_worker([gearmand.address], {fn: h}, max_jobs=1) as w:
                first = asyncio.create_task(c.submit(fn, b"1"))
                while not started:
                    await asyncio.sleep(0.01)
                second = await c.submit_background(fn, b"2")
                assert await w.drain(timeout=5) is True
                assert await first == b"done"
                assert started == [b"1"]  # and the job server still holds the second (checked below)
                assert w.in_flight == 0
            st = await c.get_status(second)
            assert st.known and not st.running  # still queued for another worker
            # A fresh worker picks it up.
            async with running_worker([gearmand.address], {fn: h}):
                for _ in range(300):
                    if not (await c.get_status(second)).known:
                        break
                    await asyncio.sleep(0.01)
            assert started == [b"1", b"2"]

    run_async(main())


def test_drain_deadline_returns_false(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("stuck")

    async def h(job: Job) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def main() -> None:
        async with Client([gearmand.address]) as c, running_worker([gearmand.address], {fn: h}) as w:
            await c.submit_background(fn, b"")
            while w.in_flight == 0:
                await asyncio.sleep(0.01)
            assert await w.drain(timeout=0.2) is False

    run_async(main())


def test_sync_client_from_threads(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("sync")
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with running_worker([gearmand.address], {fn: upper}, max_jobs=4):
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    t = threading.Thread(target=serve)
    t.start()
    try:
        with SyncClient([gearmand.address]) as c:
            out: dict[int, bytes] = {}

            def call(i: int) -> None:
                out[i] = c.submit(fn, f"t{i}".encode(), timeout=20)

            threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
            assert out == {i: f"T{i}".encode() for i in range(8)}
            h = c.submit_background(fn, b"bg")
            assert "/H:" in h
            assert c.get_status(h).known in (True, False)
    finally:
        stop.set()
        t.join(20)


def test_admin_helpers(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fn = gearman_fn("adm")

    async def main() -> None:
        async with running_worker([gearmand.address], {fn: upper}, client_id="adm-worker"):
            assert (await version(gearmand.address)).startswith("1.")
            st = {s.name: s for s in await status(gearmand.address)}
            assert st[fn].available_workers == 1
            ws = [w for w in await workers(gearmand.address) if fn in w.functions]
            assert ws and ws[0].client_id == "adm-worker"
            assert (await admin_command(gearmand.address, f"maxqueue {fn} 10")) == "OK"

    run_async(main())


def test_connection_change_hook(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    events: list[tuple[str, bool]] = []

    async def main() -> None:
        async with running_worker(
            [gearmand.address], {gearman_fn("hook"): upper}, on_connection_change=lambda s, up: events.append((s, up))
        ) as w:
            assert w.connected == [gearmand.address]

    run_async(main())
    assert events == [(gearmand.address, True), (gearmand.address, False)]
