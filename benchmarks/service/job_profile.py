"""Where a job's time goes, end to end: one ``imgworker worker`` process (``--concurrency 1``) behind a real
gearmand, two jobs in flight, the same JPEG -> 512 px over and over. Prints CPU ms per job of every thread of
the worker (the event loop, the job thread, libvips' workers), of gearmand and of this client, and the mean of
the worker's own stage timings (the result's ``ms``). One process on a 2-core machine: the client and
gearmand have the other core, so the worker's wall time per job is its own.

    .venv/bin/python -m benchmarks.service.job_profile [--file PATH] [--seconds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import CORPUS, load1
from benchmarks.suite.engine_imgworker import Service
from imgworker.gearman import Client

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(stat_path: str) -> float:
    """utime + stime of a process or thread, from /proc/.../stat."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def threads(pid: int) -> dict[str, str]:
    """tid -> thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            out[tid] = f.read().strip()
    return out


async def drive(address: str, body: bytes, seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    worker = pids["worker"]
    async with Client([address]) as client:
        for _ in range(5):  # first-job costs (imports, page cache)
            await client.submit("resize", body, timeout=60)
        names = threads(worker)
        before = {tid: cpu_s(f"/proc/{worker}/task/{tid}/stat") for tid in names}
        gearmand0, client0 = cpu_s(f"/proc/{pids['gearmand']}/stat"), time.process_time()
        results: list[dict[str, Any]] = []
        started = time.perf_counter()

        async def slot() -> None:
            while time.perf_counter() - started < seconds:
                results.append(json.loads(await client.submit("resize", body, timeout=60)))

        await asyncio.gather(slot(), slot())
        wall = time.perf_counter() - started
        n = len(results)
        per_thread: dict[str, float] = {}
        for tid, name in threads(worker).items():
            used = cpu_s(f"/proc/{worker}/task/{tid}/stat") - before.get(tid, 0.0)
            key = "event loop" if tid == str(worker) else name
            per_thread[key] = round(per_thread.get(key, 0.0) + used / n * 1000, 2)
        stages = {k: round(statistics.mean(float(r["ms"].get(k, 0.0)) for r in results), 2)
                  for k in results[-1].get("ms", {})}
        return {"jobs": n, "wall_ms_per_job": round(wall / n * 1000, 2), "worker_threads_cpu_ms": per_thread,
                "gearmand_cpu_ms": round((cpu_s(f"/proc/{pids['gearmand']}/stat") - gearmand0) / n * 1000, 2),
                "client_cpu_ms": round((time.process_time() - client0) / n * 1000, 2),
                "stage_ms_mean": stages, "errors": sum(1 for r in results if not r.get("ok"))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=CORPUS / "dragonfly_4224x3168_baseline.jpg")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    src = args.file.resolve()
    load = load1()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as out, Service(1, 1, [str(src.parent), out]) as svc:
        body = json.dumps({"src": src.as_uri(), "dst": Path(out, "a.jpg").as_uri(), "width": 512,
                           "height": 512}).encode()
        assert svc.gearmand.proc is not None
        got = asyncio.run(drive(svc.gearmand.address, body, args.seconds,
                                {"worker": svc.proc.pid, "gearmand": svc.gearmand.proc.pid}))
    got.update({"file": src.name, "load_before": load})
    print(json.dumps(got, indent=1))
    if args.json:
        args.json.write_text(json.dumps(got) + "\n")


if __name__ == "__main__":
    main()
