"""A no-op job through gearmand: our asyncio Gearman worker against php-gearman (libgearman, C) on the same
gearmand. Reuses benchmarks/service/gearman.py (the protocol module's own benchmark) for workers and loops.

Round trip p50/p99: the same client (imgworker.gearman) for both workers, one job in flight, one worker
process. Jobs/s: background jobs queued with no worker, then 1 or 2 worker processes started; the clock runs
from the moment all of them have registered (interpreter start-up is not dispatch) until the queue is empty.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from benchmarks.harness import Row, fill_latency
from benchmarks.service import gearman as gb
from imgworker.gearman import Client, status
from imgworker.testing.gearmand import Gearmand

ENGINES = {"python": "imgworker.gearman worker", "php": "php-gearman worker (libgearman, C)"}
_ids = itertools.count()


async def _measure(kind: str, seq: int, jobs: int) -> list[Row]:
    rows = []
    with Gearmand(threads=2) as g:
        fn = f"noop_seq_{kind}_{next(_ids)}"
        procs = gb.start_workers(kind, g, fn, 1)
        try:
            await gb.wait_registered(g, fn, 1)
            res = await gb.seq_python(g, fn, seq)
        finally:
            gb.stop(procs)
        rt = Row("noop round trip", ENGINES[kind], images_per_s=round(res["n"] / res["seconds"], 1), jobs=res["n"],
                 processes=1, note="1 job in flight, imgworker.gearman client")
        rows.append(fill_latency(rt, res["lat_ms"]))
        for nproc in (1, 2):
            fn = f"noop_drain_{kind}_{nproc}_{next(_ids)}"
            rate = await drain(g, kind, fn, jobs, nproc)
            rows.append(Row(f"noop drain {nproc}p", ENGINES[kind], images_per_s=round(rate, 1), jobs=jobs,
                            processes=nproc, note=f"{jobs} queued background jobs drained by {nproc} process(es)"))
    return rows


async def drain(g: Gearmand, kind: str, fn: str, jobs: int, nproc: int) -> float:
    async with Client([g.address]) as c:
        for i in range(0, jobs, 1000):
            await asyncio.gather(*(c.submit_background(fn, b"x") for _ in range(min(1000, jobs - i))))
    starting = asyncio.create_task(asyncio.to_thread(gb.start_workers, kind, g, fn, nproc, 1))
    t0 = first = None
    left0 = left_first = jobs
    try:
        while True:
            st = {s.name: s for s in await status(g.address)}[fn]
            now = time.perf_counter()
            # The clock starts once every process has registered: interpreter start-up is not dispatch.
            if t0 is None and st.available_workers >= nproc:
                t0, left0 = now, st.queued + st.running
            if first is None and st.queued < jobs:
                first, left_first = now, st.queued + st.running
            if st.queued == 0 and st.running == 0:
                if t0 is None or now - t0 < 0.005:  # drained before every process showed up: too few jobs
                    t0, left0 = first, left_first
                if t0 is None or left0 == 0 or now <= t0:
                    raise RuntimeError(f"{jobs} jobs drained between two status polls: measure with more jobs")
                return left0 / (now - t0)
            await asyncio.sleep(0.002)
    finally:
        gb.stop(await starting)


def run(seq: int, jobs: int) -> list[Row]:
    rows: list[Row] = []
    for kind in ("python", "php"):
        try:
            rows += asyncio.run(_measure(kind, seq, jobs))
        except Exception as exc:  # a missing php-gearman must not cost the other rows
            rows.append(Row("noop round trip", ENGINES[kind], skipped=f"{type(exc).__name__}: {exc}"[:200]))
    return rows
