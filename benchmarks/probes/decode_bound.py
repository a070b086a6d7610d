"""How close to the JPEG decode limit a baseline thumbnail can get at all, whatever the service costs.

In one process, one core (``VIPS_CONCURRENCY=1``), round-robin over the files of the ``thumb512 baseline-jpeg``
workload: the decode limit's own call (simplejpeg at the shrink-on-load scale, bench_decode.py), the whole CPU
backend (``CpuBackend.resize``: that same decode, then resize and the optimised JPEG encode, as sharp does), and
the file store's read of the source plus its atomic, fsync'd write of the result. Medians per file; the bounds
are what the decode's share of the work allows (files weighted equally, as the benchmark cycles them):

* ``loop_bound`` = decode / backend: an in-process thumbnailer with no I/O at all;
* ``service_bound`` = decode / (backend + read + write): a service whose job dispatch costs nothing.

    .venv/bin/python -m benchmarks.probes.decode_bound [--rounds 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # before pyvips loads: one libvips thread, as in every loop

from benchmarks.harness import BASELINE, CORPUS, load1


def measure(files: list[Path], rounds: int) -> dict[str, Any]:
    from benchmarks.harness import THUMB, Workload
    from benchmarks.suite.decode_limit import make_work, shrink_plan
    from imgworker.backends.cpu import CpuBackend
    from imgworker.core.contract import ResizeSpec
    from imgworker.core.limits import Limits
    from imgworker.stores.base import WriteOptions
    from imgworker.stores.file import FileStore
    from imgworker.worker.memory import keep_job_buffers

    keep_job_buffers()  # the worker's heap settings
    plan = shrink_plan(Workload("thumb512 baseline-jpeg", THUMB, tuple(map(str, files)), jpeg_only=True))
    decode = make_work("simplejpeg", plan)  # the decode-limit row's own call
    backend, spec = CpuBackend(), ResizeSpec(width=THUMB.width, height=THUMB.height, quality=THUMB.quality)
    limits = Limits()
    times: dict[str, dict[str, list[float]]] = {f.name: {"decode": [], "backend": [], "io": []} for f in files}
    with tempfile.TemporaryDirectory(prefix="bench-bound-") as out:
        store = FileStore([str(files[0].parent), out])
        for k in range(rounds + 1):
            for f in files:
                data = store.read(f.as_uri(), max_bytes=limits.max_source_bytes)
                t0 = time.perf_counter()
                decode(str(f), data)
                t1 = time.perf_counter()
                jpeg = backend.resize(data, spec, limits).data
                t2 = time.perf_counter()
                store.read(f.as_uri(), max_bytes=limits.max_source_bytes)
                store.write(Path(out, f.name).as_uri(), jpeg, WriteOptions(content_type="image/jpeg"))
                t3 = time.perf_counter()
                if k:  # round 0 warms imports, caches and the heap
                    for key, a, b in (("decode", t0, t1), ("backend", t1, t2), ("io", t2, t3)):
                        times[f.name][key].append((b - a) * 1000)
    med = {name: {key: round(statistics.median(v), 2) for key, v in row.items()} for name, row in times.items()}
    dec = sum(m["decode"] for m in med.values())
    back = sum(m["backend"] for m in med.values())
    io = sum(m["io"] for m in med.values())
    return {"files_ms": med, "loop_bound": round(dec / back, 3), "service_bound": round(dec / (back + io), 3),
            "target": 0.85, "rounds": rounds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    load = load1()
    got = measure([CORPUS / name for name in BASELINE], args.rounds)
    got.update({"load_before": load, "load_after": load1()})
    print(json.dumps(got, indent=1))
    if args.json:
        args.json.write_text(json.dumps(got) + "\n")


if __name__ == "__main__":
    main()
