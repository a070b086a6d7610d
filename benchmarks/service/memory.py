"""RSS of a libvips worker over several passes of the corpus, with glibc's default malloc arenas and with
them limited to 2 (the fix imgworker applies: MALLOC_ARENA_MAX=2 in the images, mallopt in worker/memory.py,
called by process.run_one).

Each configuration runs in a fresh process doing what a worker does: Service.handle in a thread pool of
--concurrency threads, every photo of the corpus at several sizes and formats per pass.

    .venv/bin/python benchmarks/service/memory.py [--passes 5] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness import corpus_photos  # noqa: E402

PHOTOS = corpus_photos()
CONFIGS = {
    "glibc default": {"env": {}, "mallopt": False},
    "MALLOC_ARENA_MAX=2 (env)": {"env": {"MALLOC_ARENA_MAX": "2"}, "mallopt": False},
    "mallopt(M_ARENA_MAX, 2) at start": {"env": {}, "mallopt": True},
}
JOBS = [{"width": 512, "format": "jpeg"}, {"width": 1600, "format": "webp"}, {"width": 256, "format": "png"}]


def child(passes: int, concurrency: int, mallopt: bool) -> None:
    if mallopt:
        from imgworker.worker.memory import limit_malloc_arenas

        limit_malloc_arenas()
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    from concurrent.futures import ThreadPoolExecutor

    from imgworker.backends.cpu import CpuBackend
    from imgworker.core.limits import Limits
    from imgworker.features.metrics import resident_bytes
    from imgworker.jobs.service import Service
    from imgworker.stores import FileStore, Stores

    out = Path(tempfile.mkdtemp(prefix="membench-"))
    roots = [str(PHOTOS.resolve()), str(out)]
    service = Service(Stores({"file": FileStore(roots)}), CpuBackend(), Limits())
    payloads = [
        json.dumps({"src": p.resolve().as_uri(), "dst": (out / f"{i}.{j['format']}").as_uri(), **j}).encode()
        for p in sorted(PHOTOS.iterdir())
        for i, j in enumerate(JOBS)
    ]
    rss = [resident_bytes() or 0]
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(passes):
            list(pool.map(lambda b: service.handle(b), payloads))
            rss.append(resident_bytes() or 0)
    print(json.dumps({"rss_mb": [round(r / 2**20) for r in rss], "jobs": len(payloads) * passes}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--child", choices=["plain", "mallopt"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.passes, args.concurrency, args.child == "mallopt")
        return
    print(f"RSS (MiB) after start and after each of {args.passes} passes, concurrency {args.concurrency}")
    base_env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    rows = {}
    for name, cfg in CONFIGS.items():
        cmd = [sys.executable, __file__, "--passes", str(args.passes), "--concurrency", str(args.concurrency),
               "--child", "mallopt" if cfg["mallopt"] else "plain"]
        out = subprocess.run(cmd, env={**base_env, **cfg["env"]}, capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name:34s} {rows[name]['rss_mb']}  ({rows[name]['jobs']} jobs)")
    ref = rows["glibc default"]["rss_mb"][-1]
    for name, row in rows.items():
        print(f"  final RSS {name:30s} {row['rss_mb'][-1]:5d} MiB = {row['rss_mb'][-1] / ref:.2f} x glibc default")


if __name__ == "__main__":
    main()
