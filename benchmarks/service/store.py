"""Corpus photos through ``s3://`` vs through ``file://``, measured in the same run on the same worker.

Starts a local gearmand, an S3-compatible server (moto in server mode, loopback, needs ``.[dev]``) and one
worker process serving both stores, then resizes the corpus photos in rounds, alternating file->file and
s3->s3 so machine noise hits both alike. Reports images/s for each and the ratio s3/file.

    .venv/bin/python benchmarks/service/store.py [--rounds 5] [--width 512] [--concurrency 2] [--processes 1]

The S3 figure is an upper bound on what store overhead costs: a loopback moto server is far slower per request
than real S3 or MinIO (it is a Python process on the same cores as the worker), and far closer (no network).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from support.fixtures_s3 import MotoServer, start_s3_worker, wait_for_workers  # noqa: E402

from imgworker.gearman import Client  # noqa: E402
from imgworker.testing.gearmand import Gearmand  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness import corpus_photos  # noqa: E402

PHOTOS = corpus_photos()


async def one_round(server: str, jobs: list[dict[str, object]], in_flight: int) -> float:
    """Seconds to run every job, ``in_flight`` at a time; fails loudly on any error result."""
    client = Client([server])
    gate = asyncio.Semaphore(in_flight)

    async def run(job: dict[str, object]) -> None:
        async with gate:
            body = await client.submit("resize", json.dumps(job).encode(), unique=uuid.uuid4().hex, timeout=300)
        result = json.loads(body)
        if not result.get("ok"):
            raise RuntimeError(f"{job['src']}: {result['error']}")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(run(j) for j in jobs))
    finally:
        await client.close()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    photos = sorted(PHOTOS.iterdir())
    work = Path(tempfile.mkdtemp(prefix="store-bench-"))
    (work / "in").mkdir()
    for p in photos:
        shutil.copyfile(p, work / "in" / p.name)
    moto = MotoServer().start()
    admin = moto.client()
    admin.create_bucket(Bucket="bench")
    for p in photos:
        admin.put_object(Bucket="bench", Key=f"in/{p.name}", Body=p.read_bytes())
    in_flight = args.concurrency * args.processes
    times: dict[str, list[float]] = {"file": [], "s3": []}
    try:
        with Gearmand() as g:
            extra = ["--processes", str(args.processes)]
            worker = start_s3_worker(g.address, moto.endpoint, ["bench"], work, *extra, concurrency=args.concurrency)
            try:
                wait_for_workers(g.address, "resize", args.processes)
                jobs = {
                    "file": [
                        {"src": (work / "in" / p.name).as_uri(), "dst": (work / "out" / f"{p.stem}.jpg").as_uri()}
                        for p in photos
                    ],
                    "s3": [{"src": f"s3://bench/in/{p.name}", "dst": f"s3://bench/out/{p.stem}.jpg"} for p in photos],
                }
                for job_list in jobs.values():
                    for job in job_list:
                        job["width"] = args.width
                asyncio.run(one_round(g.address, jobs["file"] + jobs["s3"], in_flight))  # warm-up, not counted
                for r in range(args.rounds):
                    order = ["file", "s3"] if r % 2 == 0 else ["s3", "file"]
                    for scheme in order:
                        times[scheme].append(asyncio.run(one_round(g.address, jobs[scheme], in_flight)))
            finally:
                worker.stop()
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    rates = {s: len(photos) / statistics.median(t) for s, t in times.items()}
    # Best round too: on a shared machine the median carries other processes' load, the best round less so.
    best = {s: len(photos) / min(t) for s, t in times.items()}
    report = {
        "photos": len(photos),
        "rounds": args.rounds,
        "width": args.width,
        "processes": args.processes,
        "concurrency": args.concurrency,
        "images_per_s": {s: round(v, 2) for s, v in rates.items()},
        "s3_vs_file": round(rates["s3"] / rates["file"], 3),
        "best_images_per_s": {s: round(v, 2) for s, v in best.items()},
        "best_s3_vs_file": round(best["s3"] / best["file"], 3),
        "round_seconds": {s: [round(x, 3) for x in t] for s, t in times.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
