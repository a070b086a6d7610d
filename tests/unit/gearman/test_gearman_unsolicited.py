"""Issue 26 item 11: a job server that assigns jobs nobody asked for (one GRAB, three JOB_ASSIGN_UNIQ) drove
the worker's count of outstanding grabs negative, so it grabbed more and ran 3 jobs at concurrency 2. Now an
assignment without a grab outstanding never makes the count negative and waits for a free slot: every job
still runs and is answered, never more than ``max_jobs`` at once. The server here is a real TCP server in the
test speaking the binary protocol (the one way to make gearmand misbehave like this)."""

from __future__ import annotations

import asyncio
import struct

from support.fixtures_gearman import run_async, running_worker

from imgworker.gearman import Job
from imgworker.gearman.protocol import REQ, RES, P, encode


async def _scenario() -> tuple[int, list[int], int]:
    completed: list[bytes] = []
    grabs_seen: list[int] = []
    all_done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assigned = False
        try:
            while True:
                magic, ptype, size = struct.unpack(">4sII", await reader.readexactly(12))
                body = await reader.readexactly(size)
                assert magic == REQ
                if ptype == P.GRAB_JOB_UNIQ and not assigned:
                    assigned = True  # one grab asked: three jobs given
                    for i in range(3):
                        writer.write(encode(P.JOB_ASSIGN_UNIQ, f"H:x:{i}".encode(), b"fn", f"u{i}".encode(),
                                            b"{}", magic=RES))
                elif ptype == P.GRAB_JOB_UNIQ:
                    writer.write(encode(P.NO_JOB, magic=RES))
                elif ptype == P.PRE_SLEEP:
                    pass
                elif ptype == P.WORK_COMPLETE:
                    completed.append(body.split(b"\0", 1)[0])
                    if len(completed) == 3:
                        all_done.set()
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    running = most = 0
    release = asyncio.Event()

    async def handler(job: Job) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return b"done"

    async with running_worker([f"127.0.0.1:{port}"], {"fn": handler}, max_jobs=2) as w:
        for _ in range(50):  # let every assignment arrive and be handled
            await asyncio.sleep(0.02)
            grabs_seen.append(w._sessions[0].grabs)
        release.set()
        await asyncio.wait_for(all_done.wait(), 10)
        grabs_seen.append(w._sessions[0].grabs)
    server.close()
    return most, grabs_seen, len(completed)


def test_unsolicited_assignments_never_exceed_max_jobs_nor_drive_grabs_negative() -> None:
    most, grabs_seen, completed = run_async(_scenario(), timeout=30)
    assert min(grabs_seen) >= 0, grabs_seen
    assert most <= 2, most
    assert completed == 3  # every job still ran and was answered
