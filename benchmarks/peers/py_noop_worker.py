"""Benchmark peer: no-op imgworker.gearman Worker. Usage: python py_noop_worker.py SERVER FUNCTION [MAX_JOBS]"""

from __future__ import annotations

import asyncio
import sys

from imgworker.gearman import Job, Worker


async def noop(job: Job) -> bytes:
    return b""


async def main() -> None:
    w = Worker([sys.argv[1]], max_jobs=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    w.register(sys.argv[2], noop)
    task = asyncio.create_task(w.run())
    await w.wait_connected()
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
