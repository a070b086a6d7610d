"""imgworker end to end: client -> gearmand -> ``imgworker worker`` (N processes x C jobs) -> file store -> result.

The worker runs exactly as deployed (``python -m imgworker worker --processes N --concurrency C --root ...``,
default logging); the driver is the async client imgworker.gearman.Client keeping N*(C+1) jobs in flight:
one queued in gearmand behind each process's C running ones, so that no worker idles for a client -> gearmand
-> worker round trip between jobs (thumbor's client likewise keeps 2 requests per process in flight; sharp is
a loop with no gap at all). Also: one 20 MP JPEG's round trip on an idle worker, and a directory through
``imgworker submit``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import CORPUS, REPO, Row, Workload, fill_latency, loop_env, tree_rss_mb
from imgworker.gearman import Client, status
from imgworker.testing.gearmand import Gearmand

ENGINE = "imgworker e2e"
PIPELINES = REPO / "pipelines"


class Service:
    """gearmand + one ``imgworker worker`` group, stopped on exit."""

    def __init__(self, processes: int, concurrency: int, roots: list[str], pipelines: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.processes = processes
        self.gearmand = Gearmand(threads=2).start()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = [sys.executable, "-m", "imgworker", "worker", "--server", self.gearmand.address,
               "--processes", str(processes), "--concurrency", str(concurrency), "--backend", "cpu"]
        for root in roots:
            cmd += ["--root", root]
        if pipelines:
            cmd += ["--pipelines", str(PIPELINES)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=loop_env(env), start_new_session=True)
        asyncio.run(self._wait_ready("resize", processes))

    async def _wait_ready(self, function: str, n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if any(s.name == function and s.available_workers >= n for s in await status(self.gearmand.address)):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"workers did not register within 60 s: {self.log_tail()}")

    def log_tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-800:]

    def rss(self) -> tuple[float, float]:
        return tree_rss_mb([self.proc.pid])

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.gearmand.close()
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def payloads(workload: Workload, out: str, slots: int) -> list[list[dict[str, Any]]]:
    """Per in-flight slot, one payload per file; each slot writes its own destinations."""
    per_slot = []
    for k in range(slots):
        jobs = []
        for f in workload.files:
            dst = Path(out, str(k), Path(f).name + ".jpg").as_uri()
            if workload.pipeline:
                job: dict[str, Any] = {"src": Path(f).as_uri(), "dst": Path(out, str(k), Path(f).stem).as_uri() + "/",
                                       "pipeline": workload.pipeline}
            else:
                job = {"src": Path(f).as_uri(), "dst": dst, **workload.op.payload()}
            jobs.append(job)
        per_slot.append(jobs)
    return per_slot


async def drive(address: str, function: str, per_slot: list[list[dict[str, Any]]], seconds: float
                ) -> tuple[int, float, list[float], list[str]]:
    """Each slot submits its jobs in turn until ``seconds`` pass: one job in flight per slot."""
    lat: list[float] = []
    errors: list[str] = []
    bodies = [[json.dumps(p).encode() for p in jobs] for jobs in per_slot]
    async with Client([address]) as client:
        # Warm-up: every file once per slot (imports, page cache, first-job costs in each process).
        await asyncio.gather(*(client.submit(function, b, timeout=300) for jobs in bodies for b in jobs))
        started = time.perf_counter()
        stop_at = started + seconds
        ends: list[float] = []

        async def slot(k: int, jobs: list[bytes]) -> None:
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                result = json.loads(await client.submit(function, jobs[i % len(jobs)], timeout=300))
                lat.append((time.perf_counter() - t0) * 1000)
                if not result.get("ok"):
                    errors.append(result.get("error", {}).get("code", "?"))
                i += 1
            ends.append(time.perf_counter())

        await asyncio.gather(*(slot(k, jobs) for k, jobs in enumerate(bodies)))
    return len(lat), max(ends) - started, lat, errors


def in_flight(processes: int, concurrency: int) -> int:
    """Jobs the client keeps submitted: each process's C running plus one waiting in gearmand, which the
    worker grabs the moment it finishes (with exactly N*C, each worker would wait a round trip per job)."""
    return processes * (concurrency + 1)


def run(workload: Workload, processes: int, concurrency: int, seconds: float, roots: list[str],
        engine: str = ENGINE, env: dict[str, str] | None = None) -> Row:
    if workload.pipeline and not (PIPELINES / f"{workload.pipeline}.yaml").exists():
        return Row(workload.name, engine, skipped=f"pending: pipelines/{workload.pipeline}.yaml does not exist yet")
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as out, \
            Service(processes, concurrency, [*roots, out], pipelines=bool(workload.pipeline), env=env) as svc:
        function = workload.pipeline or "resize"
        depth = in_flight(processes, concurrency)
        per_slot = payloads(workload, out, depth)
        jobs, wall, lat, errors = asyncio.run(drive(svc.gearmand.address, function, per_slot, seconds))
        rss_sum, rss_max = svc.rss()
        gearmand_mb = tree_rss_mb([svc.gearmand.proc.pid])[0] if svc.gearmand.proc else 0.0
    note = f"{processes} proc x {concurrency} jobs, {depth} in flight (1 queued per process)"
    if errors:
        note += f"; {len(errors)} failed: {sorted(set(errors))}"
    row = Row(workload.name, engine, images_per_s=round(jobs / wall, 2), peak_rss_mb=rss_sum,
              max_proc_rss_mb=rss_max, jobs=jobs, processes=processes, note=note)
    row.extra.update({"concurrency": concurrency, "in_flight": depth, "gearmand_rss_mb": gearmand_mb,
                      "errors": len(errors)})
    return fill_latency(row, lat)


def round_trip(path: Path, processes: int, repeats: int) -> dict[str, Any]:
    """One big JPEG -> 512 px, one job at a time on an idle worker: the latency a user waits for."""
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as out, \
            Service(processes, 1, [str(path.parent), out]) as svc:
        body = json.dumps({"src": path.as_uri(), "dst": Path(out, "rt.jpg").as_uri(), "width": 512, "height": 512})

        async def go() -> list[float]:
            times = []
            async with Client([svc.gearmand.address]) as client:
                for _ in range(repeats + 1):
                    t0 = time.perf_counter()
                    result = json.loads(await client.submit("resize", body.encode(), timeout=120))
                    assert result.get("ok"), result
                    times.append((time.perf_counter() - t0) * 1000)
            return times[1:]  # the first one pays the process's first-job costs

        times = sorted(asyncio.run(go()))
    return {"file": path.name, "p50_ms": round(times[len(times) // 2], 1), "min_ms": round(times[0], 1),
            "repeats": repeats,
            "command": "imgworker submit --server HOST:PORT --width 512 --height 512 "
                       f"$IMGWORKER_CORPUS/photos/{path.name} OUT.jpg"}


def submit_directory(processes: int, concurrency: int, copies: int) -> dict[str, Any]:
    """``imgworker submit DIR/ OUT/`` over the corpus photos (each copied ``copies`` times)."""
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        src, out = Path(tmp, "in"), Path(tmp, "out")
        src.mkdir()
        out.mkdir()
        for k in range(copies):
            for f in sorted(CORPUS.iterdir()):
                shutil.copyfile(f, src / f"{k}_{f.name}")
        with Service(processes, concurrency, [tmp]) as svc:
            cmd = [sys.executable, "-m", "imgworker", "submit", "--server", svc.gearmand.address, "--width", "512",
                   "--height", "512", "--format", "jpeg", "--quiet", f"{src}/", f"{out}/"]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        try:
            summary = json.loads(done.stdout)
        except ValueError:
            return {"error": (done.stdout + done.stderr)[-500:]}
    return {"images": summary.get("jobs"), "done": summary.get("done"), "failed": summary.get("failed"),
            "seconds": summary.get("seconds"), "images_per_s": summary.get("images_per_s"),
            "processes": processes, "concurrency": concurrency,
            "command": "imgworker submit --server HOST:PORT --width 512 --height 512 --format jpeg DIR/ OUT/"}
