"""Gearman throughput: imgworker.gearman vs php-gearman (libgearman) on one local gearmand.

Measures (no-op jobs):
  * sequential foreground round trips/s and p50/p99 latency (one client, one worker process), for every
    client/worker pairing (ours+ours, PHP+PHP, our client+PHP worker, PHP client+our worker), so each side's
    cost shows;
  * drain rate: N background jobs queued with no worker, then K worker processes started; time until the
    admin `status` shows the queue empty (worker start-up included; `startup_s` reports it separately), and
    the workers' CPU time per job (user + system, start-up excluded).
The load average is recorded at the start and end of every measurement (a shared VM: compare ratios).
With --uvloop our worker processes and our client run on uvloop's event loop instead of asyncio's.
Usage: python benchmarks/service/gearman.py [--jobs 20000] [--seq 5000] [--uvloop] [--json PATH]
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
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# Runs a peer script with uvloop's policy installed first, so its asyncio.run() gets a uvloop loop.
UVLOOP_SHIM = (
    "import asyncio, runpy, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
USE_UVLOOP = False


def load() -> float:
    return os.getloadavg()[0]


def start_workers(kind: str, g: Gearmand, fn: str, n: int, max_jobs: int = 1) -> list[subprocess.Popen[bytes]]:
    procs = []
    for _ in range(n):
        if kind == "python":
            cmd = [sys.executable, str(PEERS / "py_noop_worker.py"), g.address, fn, str(max_jobs)]
            if USE_UVLOOP:
                cmd[1:1] = ["-c", UVLOOP_SHIM]
        else:
            cmd = ["php", str(PEERS / "php_noop_worker.php"), "127.0.0.1", str(g.port), fn]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, env=ENV))
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
        p.wait()


async def wait_registered(g: Gearmand, fn: str, n: int) -> None:
    while not any(s.name == fn and s.available_workers >= n for s in await status(g.address)):
        await asyncio.sleep(0.005)


async def seq_python(g: Gearmand, fn: str, n: int) -> dict[str, Any]:
    lat = []
    async with Client([g.address]) as c:
        await c.submit(fn, b"x")  # connect + warm up
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await c.submit(fn, b"x")
            lat.append((time.perf_counter() - t) * 1000)
        secs = time.perf_counter() - t0
    lat.sort()
    return {"n": n, "seconds": secs, "lat_ms": lat}


def seq_php(g: Gearmand, fn: str, n: int) -> dict[str, Any]:
    r = subprocess.run(["php", str(PEERS / "php_seq_client.php"), "127.0.0.1", str(g.port), fn, str(n)],
                       capture_output=True, check=True)
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def cpu_s(pids: list[int]) -> float:
    """user + system CPU seconds of processes (Linux /proc): a per-job cost that the VM's load barely moves."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def drain(
    g: Gearmand, kind: str, fn: str, jobs: int, nproc: int, max_jobs: int, cpu: dict[str, float]
) -> float:
    async with Client([g.address]) as c:
        for i in range(0, jobs, 1000):
            await asyncio.gather(*(c.submit_background(fn, b"x") for _ in range(min(1000, jobs - i))))
    t0 = time.perf_counter()
    procs = await asyncio.to_thread(start_workers, kind, g, fn, nproc, max_jobs)
    try:
        c0 = cpu_s([p.pid for p in procs])  # after start-up: its CPU is not per-job work
        while True:
            st = {s.name: s for s in await status(g.address)}
            if st[fn].queued == 0 and st[fn].running == 0:
                break
            await asyncio.sleep(0.005)
        rate = jobs / (time.perf_counter() - t0)
        cpu["us_per_job"] = (cpu_s([p.pid for p in procs]) - c0) / jobs * 1e6
        return rate
    finally:
        stop(procs)


def summary(res: dict[str, Any]) -> dict[str, float]:
    lat = res["lat_ms"]
    return {"rps": res["n"] / res["seconds"], "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99)]}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--seq", type=int, default=5000)
    ap.add_argument("--uvloop", action="store_true", help="our worker and client on uvloop")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict[str, Any] = {"jobs": args.jobs, "seq": args.seq, "cpus": os.cpu_count(), "uvloop": USE_UVLOOP}
    out["load_start"] = load()
    with Gearmand(threads=2) as g:
        for kind in ("python", "php"):  # worker start-up to "ready" (registered), empty queue
            t0 = time.perf_counter()
            stop(start_workers(kind, g, f"bench_start_{kind}", 1))
            out[f"startup_s_{kind}"] = time.perf_counter() - t0
        # (client, worker): ours+ours, PHP+PHP, then the mixed pairs that show which side costs what.
        for client, worker in (("python", "python"), ("php", "php"), ("python", "php"), ("php", "python")):
            fn = f"bench_seq_{client}_{worker}"
            procs = start_workers(worker, g, fn, 1)
            try:
                await wait_registered(g, fn, 1)
                la = load()
                res = await seq_python(g, fn, args.seq) if client == "python" else seq_php(g, fn, args.seq)
                out[f"seq_{client}_{worker}"] = {**summary(res), "load": [la, load()]}
            finally:
                stop(procs)
        configs = [("python", 1, 1), ("php", 1, 1), ("python", 1, 2), ("python", 2, 1), ("php", 2, 1),
                   ("python", 1, 8)]
        for kind, nproc, mj in configs:
            fn = f"bench_drain_{kind}_{nproc}_{mj}"
            la = load()
            cpu: dict[str, float] = {}
            rate = await drain(g, kind, fn, args.jobs, nproc, mj, cpu)
            out[f"drain_{kind}_{nproc}p_{mj}j"] = rate
            out[f"drain_{kind}_{nproc}p_{mj}j_load"] = [la, load()]
            out[f"drain_{kind}_{nproc}p_{mj}j_cpu_us"] = cpu["us_per_job"]
    out["load_end"] = load()
    sp, spp = out["seq_python_python"], out["seq_php_php"]
    php1 = out["drain_php_1p_1j"]
    rows = [
        ("seq round trips/s", sp["rps"], spp["rps"]),
        ("seq p50 ms", sp["p50_ms"], spp["p50_ms"]),
        ("seq p99 ms", sp["p99_ms"], spp["p99_ms"]),
        ("seq rt/s our client+PHP wkr", out["seq_python_php"]["rps"], spp["rps"]),
        ("seq rt/s PHP client+our wkr", out["seq_php_python"]["rps"], spp["rps"]),
        ("drain/s 1 proc", out["drain_python_1p_1j"], php1),
        ("drain/s 1 proc max_jobs=2", out["drain_python_1p_2j"], php1),
        ("drain/s 2 procs", out["drain_python_2p_1j"], out["drain_php_2p_1j"]),
        ("drain/s 1 proc max_jobs=8", out["drain_python_1p_8j"], php1),
        ("worker CPU us/job, 1 proc", out["drain_python_1p_1j_cpu_us"], out["drain_php_1p_1j_cpu_us"]),
        ("worker CPU us/job, max_jobs=2", out["drain_python_1p_2j_cpu_us"], out["drain_php_1p_1j_cpu_us"]),
        ("worker start-up s", out["startup_s_python"], out["startup_s_php"]),
    ]
    print(f"event loop (ours): {'uvloop' if USE_UVLOOP else 'asyncio'}")
    print(f"load average (1 min): start {out['load_start']:.2f}, end {out['load_end']:.2f}")
    print(f"{'metric':30} {'imgworker':>12} {'php':>12} {'ours/php':>9}")
    for name, ours, php in rows:
        print(f"{name:30} {ours:12.2f} {php:12.2f} {ours / php:9.2f}")
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    if "--uvloop" in sys.argv[1:]:
        import uvloop

        USE_UVLOOP = True
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main())
