"""The Protocol-based connection (framing, limits, batching) and eager handler start."""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable

import pytest
from support.fixtures_gearman import run_async, running_worker

from imgworker.gearman import Client, Job, JobFailed, ProtocolError
from imgworker.gearman.connection import Connection
from imgworker.gearman.eager import eager_task
from imgworker.gearman.protocol import RES, P, encode
from imgworker.gearman.worker import Handler
from imgworker.testing.gearmand import Gearmand

FnMaker = Callable[[str], str]


async def _serve(
    chunks: list[bytes], max_job: int | None = None, skipped: list[tuple[int, bytes, int]] | None = None,
) -> tuple[list[tuple[int, tuple[bytes, ...]]], BaseException | None, int]:
    """A loopback server writes ``chunks`` (a pause between each) to a Connection; return what it decoded,
    the close reason and the largest receive buffer it held."""
    got: list[tuple[int, tuple[bytes, ...]]] = []
    closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    opened = asyncio.Event()
    served: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await opened.wait()
        try:
            for c in chunks:
                writer.write(c)
                await writer.drain()
                await asyncio.sleep(0.002)
        except ConnectionError:
            pass  # the client dropped a bad stream: expected
        finally:
            writer.close()
            served.set_result(None)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    biggest = 0

    def on_packet(t: int, args: tuple[bytes, ...]) -> None:
        nonlocal biggest
        biggest = max(biggest, len(conn._rbuf))
        got.append((t, args))

    def on_close(e: BaseException | None) -> None:
        if not closed.done():
            closed.set_result(e)

    def on_oversized(t: int, head: bytes, size: int) -> None:
        nonlocal biggest
        biggest = max(biggest, len(conn._rbuf))
        assert skipped is not None
        skipped.append((t, head, size))

    conn = await Connection.open(f"127.0.0.1:{port}", on_packet, on_close, max_packet=8 << 20,
                                 on_oversized=on_oversized if skipped is not None else None, max_job=max_job)
    opened.set()
    exc = await asyncio.wait_for(closed, 10)
    await asyncio.wait_for(served, 10)
    biggest = max(biggest, len(conn._rbuf))
    assert conn.closed
    server.close()
    return got, exc, biggest


def test_frames_split_anyhow_and_5mb_body_in_place() -> None:
    big = random.randbytes(5 * 1024 * 1024)
    packets = [
        (P.NOOP, ()),
        (P.JOB_ASSIGN_UNIQ, (b"H:x:1", b"fn", b"u", b"a\0b\0")),
        (P.WORK_COMPLETE, (b"H:x:2", big)),
        (P.NO_JOB, ()),
    ]
    wire = b"".join(encode(t, *a, magic=RES) for t, a in packets)
    # Cut points inside headers, inside bodies and at frame edges, plus a batched tail.
    cuts = sorted({1, 5, 12, 13, 20, 40, 41, 1000, 70000, len(wire) - 13, len(wire) - 12})
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    got, exc, biggest = run_async(_serve(chunks))
    assert got == packets
    assert "closed by server" in str(exc)
    # The 5 MB body was received into one buffer sized for its frame, not re-grown chunk by chunk.
    assert biggest <= len(big) + 64 * 1024


def test_job_over_max_job_is_skipped_unread_from_its_header() -> None:
    """Issue 26 item 2: a job assignment whose size says its payload is over the caller's limit is skipped
    without buffering its body (the receive buffer stays at its 64 KiB), reported once with its head, and the
    packets after it still arrive."""
    data = b"{" + b"x" * (6 * 1024 * 1024) + b"}"
    wire = (encode(P.NOOP, magic=RES) + encode(P.JOB_ASSIGN_UNIQ, b"H:x:1", b"resize", b"u1", data, magic=RES)
            + encode(P.JOB_ASSIGN_UNIQ, b"H:x:2", b"resize", b"u2", b"{}", magic=RES))
    chunks = [wire[i : i + 100_000] for i in range(0, len(wire), 100_000)]
    skipped: list[tuple[int, bytes, int]] = []
    got, _exc, biggest = run_async(_serve(chunks, max_job=64 * 1024, skipped=skipped))
    assert got == [(P.NOOP, ()), (P.JOB_ASSIGN_UNIQ, (b"H:x:2", b"resize", b"u2", b"{}"))]
    ((ptype, head, size),) = skipped
    assert ptype == P.JOB_ASSIGN_UNIQ and head.startswith(b"H:x:1\0resize\0u1\0{x") and len(head) <= 4096
    assert size == len(b"H:x:1\0resize\0u1\0") + len(data)
    assert biggest <= 128 * 1024, biggest  # never the 6 MiB body


def test_bad_frames_close_with_protocol_error_without_buffering() -> None:
    good = encode(P.NOOP, magic=RES)
    for bad, text in [
        (b"\0BAD" + good[4:], "bad magic"),
        (RES + (99).to_bytes(4, "big") + bytes(4), "unknown packet type"),
        (RES + int(P.WORK_DATA).to_bytes(4, "big") + (1 << 30).to_bytes(4, "big"), "exceeds"),
        (RES + int(P.NOOP).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"abc", "takes no arguments"),
        (encode(P.JOB_ASSIGN_UNIQ, b"only-one-arg", magic=RES), "needs 4 arguments"),
    ]:
        got, exc, biggest = run_async(_serve([good, bad, good]))
        assert got == [(P.NOOP, ())], text  # the frame after the bad one is never delivered
        assert isinstance(exc, ProtocolError) and text in str(exc)
        assert biggest <= 128 * 1024  # a 1 GiB size in a header allocates nothing


def test_eager_task_keeps_task_semantics() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[object] = []

    async def sync_done() -> int:
        seen.append(asyncio.current_task())
        var.set(1)  # must not leak into the caller's context
        return 7

    async def timeout_first() -> str:
        async with asyncio.timeout(0.05):  # needs a current task before the first await
            await asyncio.sleep(5)
        return "unreachable"

    async def wait_then_cancelled(log: list[str]) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[str] = []
        ran_now: list[list[object]] = []
        started: asyncio.Future[list[asyncio.Task[object]]] = loop.create_future()

        def from_callback() -> None:  # like a read callback: no task is current here
            tasks: list[asyncio.Task[object]] = [
                eager_task(loop, sync_done()), eager_task(loop, timeout_first()),
                eager_task(loop, wait_then_cancelled(log)),
            ]
            tasks[2].cancel()  # before the task's first step: must still reach the coroutine
            ran_now.append(list(seen))
            started.set_result(tasks)

        loop.call_soon(from_callback)
        tasks = await started
        assert ran_now == [[tasks[0]]]  # ran synchronously inside the callback, as the task itself
        res = await asyncio.gather(*tasks, return_exceptions=True)
        assert res[0] == 7 and isinstance(res[1], TimeoutError)
        assert isinstance(res[2], asyncio.CancelledError) and log == ["cancelled"]
        assert var.get() == 0

    run_async(main())


def test_eager_handlers_through_gearmand(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    fns = {k: gearman_fn(k) for k in ("sync", "timeout", "slow", "fail")}

    async def sync_h(job: Job) -> bytes:
        await job.send_status(1, 2)  # completes without suspending: sent in the same write as the result
        return job.data[::-1]

    async def timeout_h(job: Job) -> bytes:
        async with asyncio.timeout(5):
            assert asyncio.current_task() is not None
            await asyncio.sleep(0.01)
            return b"t:" + job.data

    async def slow_h(job: Job) -> bytes:
        await asyncio.sleep(0.05)
        return b"slow"

    async def fail_h(job: Job) -> bytes:
        raise RuntimeError("fails before any await")

    handlers: dict[str, Handler] = {
        fns["sync"]: sync_h, fns["timeout"]: timeout_h, fns["slow"]: slow_h, fns["fail"]: fail_h
    }

    async def main() -> None:
        statuses: list[tuple[int, int]] = []
        async with running_worker([gearmand.address], handlers, max_jobs=2) as w, Client(
            [gearmand.address]
        ) as c:
            assert await c.submit(fns["sync"], b"abc", on_status=lambda n, d: statuses.append((n, d))) == b"cba"
            assert statuses == [(1, 2)]
            got = await asyncio.gather(
                *(c.submit(fns["timeout"], str(i).encode()) for i in range(20)),
                *(c.submit(fns["slow"], b"") for _ in range(4)),
                *(c.submit(fns["sync"], b"xy") for _ in range(20)),
            )
            assert got == [f"t:{i}".encode() for i in range(20)] + [b"slow"] * 4 + [b"yx"] * 20
            with pytest.raises(JobFailed):
                await c.submit(fns["fail"], b"")
            assert (w.jobs_done, w.jobs_failed, w.in_flight) == (45, 1, 0)
            assert not w._jobs  # finished jobs leave no task behind

    run_async(main())
