"""A worker process using imgworker.gearman.Worker (killed by fault tests).

Usage: python tests/peers/py_worker.py SERVER FUNCTION HOLD_SECONDS
Handler prints "got <data>" to stdout, sleeps HOLD_SECONDS, returns b"done:" + data.
"""

from __future__ import annotations

import asyncio
import sys

from imgworker.gearman import Job, Worker


async def main() -> None:
    server, fn, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    w = Worker([server], max_jobs=1)

    async def handler(job: Job) -> bytes:
        print("got", job.data.decode(), flush=True)
        await asyncio.sleep(hold)
        return b"done:" + job.data

    w.register(fn, handler)
    task = asyncio.create_task(w.run())
    await w.wait_connected()
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
