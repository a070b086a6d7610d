"""The core service's two headline figures, on the shared corpus:

1. round trip of one 20 MP JPEG -> 512 px job through gearmand and a worker (first, p50 and min of 10 more);
2. images/s of ``imgworker submit`` over a directory of 36 photos (4 copies of the corpus).

    python benchmarks/service/core_figures.py [--processes 2] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgworker import Client
from imgworker.gearman import status
from imgworker.testing.gearmand import Gearmand

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness import corpus_photos

PHOTOS = corpus_photos()


def wait_registered(server: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = asyncio.run(status(server))
        if next((r.available_workers for r in rows if r.name == "resize"), 0) >= count:
            return
        time.sleep(0.1)
    raise TimeoutError("worker did not register")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="core-figures-"))
    src = out / "in"
    src.mkdir()
    for k in range(4):
        for p in PHOTOS.iterdir():
            if p.is_file():
                shutil.copy(p, src / f"{k}_{p.name}")
    with Gearmand() as g:
        worker = subprocess.Popen(
            [sys.executable, "-m", "imgworker", "worker", "--server", g.address, "--root", str(PHOTOS),
             "--root", str(out), "--processes", str(args.processes), "--concurrency", str(args.concurrency)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_registered(g.address, args.processes)
            times, result = [], None
            with Client([g.address]) as client:
                for i in range(11):
                    started = time.perf_counter()
                    result = client.resize(src=(PHOTOS / "kleiber_6028x3391_baseline.jpg").as_uri(),
                                           dst=(out / f"k{i}.jpg").as_uri(), width=512, height=512)
                    times.append((time.perf_counter() - started) * 1000)
            assert result is not None
            submit = subprocess.run(
                [sys.executable, "-m", "imgworker", "submit", "--server", g.address, "--width", "512", "--height",
                 "512", "--format", "jpeg", "--quiet", str(src) + "/", str(out / "out")],
                capture_output=True, text=True, check=False,
            )
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    summary = json.loads(submit.stdout)
    print(json.dumps({
        "load_average": os.getloadavg(),
        "roundtrip_20mp_to_512_ms": {"first": round(times[0], 1), "p50": round(statistics.median(times[1:]), 1),
                                     "min": round(min(times[1:]), 1), "worker_stages_ms": result.ms},
        "submit_directory": {k: summary[k] for k in ("jobs", "done", "failed", "seconds", "images_per_s")},
        "processes": args.processes, "concurrency": args.concurrency,
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
