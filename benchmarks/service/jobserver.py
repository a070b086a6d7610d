"""Job-server cost of durability: background submits/s and drain/s with gearmand's in-memory queue, with its
sqlite queue as gearmand creates it (rollback journal) and as imgworker runs it (write-ahead log, the default),
plus what a SIGKILL + restart of a sqlite one keeps and how long it takes.

Per queue type: N background jobs (an imgworker-sized ~250-byte JSON payload, unique ids) are submitted by one
imgworker.gearman client with ``--in-flight`` submissions pipelined -> submits/s. For sqlite, gearmand is then
SIGKILLed and restarted on the same file: restart seconds (until the port answers) and jobs still queued. Then
``--workers`` no-op worker processes (benchmarks/peers/py_noop_worker.py) drain the queue -> drain/s (worker
start-up included). The load average is recorded before and after (a shared machine: compare the two modes).

Usage: python benchmarks/service/jobserver.py [--jobs 5000] [--workers 1] [--in-flight 200] [--dir DIR] [--json PATH]
(``--dir``: where the sqlite file goes; default the system temp dir, i.e. a real disk with fsync, not tmpfs.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from imgworker.gearman import Client, status  # noqa: E402
from imgworker.testing.gearmand import Gearmand  # noqa: E402

PEERS = ROOT / "benchmarks" / "peers"
FN = "bench_jobserver"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def payload(i: int) -> bytes:
    return json.dumps({"src": f"s3://uploads/2026/12/01/user-{i % 997}/photo-{i}.jpg",
                       "dst": f"s3://thumbs/2026/12/01/user-{i % 997}/photo-{i}.webp",
                       "width": 512, "height": 512, "fit": "inside", "format": "webp", "quality": 80}).encode()


async def queued(g: Gearmand) -> int:
    return next((s.queued for s in await status(g.address) if s.name == FN), 0)


async def submit_all(g: Gearmand, jobs: int, in_flight: int) -> float:
    async with Client([g.address]) as c:
        await c.submit_background(FN, payload(-1), unique="warm-up")
        t0 = time.perf_counter()
        for start in range(0, jobs, in_flight):
            await asyncio.gather(*(c.submit_background(FN, payload(i), unique=f"job-{i}")
                                   for i in range(start, min(jobs, start + in_flight))))
        return jobs / (time.perf_counter() - t0)


async def drain(g: Gearmand, workers: int) -> tuple[float, int]:
    total = await queued(g)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(PEERS / "py_noop_worker.py"), g.address, FN, "2"],
                              stdout=subprocess.DEVNULL, env=env) for _ in range(workers)]
    try:
        while await queued(g):
            await asyncio.sleep(0.01)
        return total / (time.perf_counter() - t0), total
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def one_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"queue": mode, "load_before": loadavg()}
    persistent = mode != "in-memory"
    g = Gearmand(persistent=persistent, data_dir=args.dir, journal_mode=mode.removeprefix("sqlite-")).start()
    try:
        row["submits_per_s"] = round(await submit_all(g, args.jobs, args.in_flight))
        row["queued"] = await queued(g)
        if persistent:
            t0 = time.perf_counter()
            g.restart(kill=True)
            row["restart_s"] = round(time.perf_counter() - t0, 2)
            row["queued_after_sigkill"] = await queued(g)
            assert g.queue_file is not None
            row["sqlite_bytes"] = g.queue_file.stat().st_size
        rate, drained = await drain(g, args.workers)
        row["drain_per_s"], row["drained"] = round(rate), drained
    finally:
        g.close()
    row["load_after"] = loadavg()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--in-flight", type=int, default=200)
    p.add_argument("--dir", default=None, help="directory for the sqlite file (default: the temp dir)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    rows = [asyncio.run(one_mode(mode, args)) for mode in ("in-memory", "sqlite-delete", "sqlite-wal")]
    for row in rows:
        print(json.dumps(row))
    mem = rows[0]
    for sql in rows[1:]:
        print(f"{sql['queue']} / in-memory: submits {sql['submits_per_s'] / mem['submits_per_s']:.2f}x, "
              f"drain {sql['drain_per_s'] / mem['drain_per_s']:.2f}x; "
              f"{sql['queued_after_sigkill']}/{sql['queued']} queued jobs kept through SIGKILL")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))
    return 0 if all(r["queued_after_sigkill"] == r["queued"] == args.jobs + 1 for r in rows[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
