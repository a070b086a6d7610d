"""Each shipped pipeline on the GPU backend (array executor on CuPy) against the CPU backend on all cores,
same run, same jobs: images/s, the ratio, and the mean per-stage milliseconds from the results' ``ms``.

    python -m benchmarks.gpu.pipelines --jobs 96 --threads 32 --out /tmp/out/pipelines.json
    python -m benchmarks.gpu.pipelines --numpy --jobs 4 --procs 1   # checks the script without a GPU
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
PIPELINES = ("thumbnail", "avatar", "web", "product_zoom")
KINDS = ("baseline", "dragonfly", "progressive")


def _job(name: str, src: Path, out: Path, i: int) -> dict[str, Any]:
    from support.corpus import photo

    job: dict[str, Any] = {"src": src.as_uri(), "dst": f"{out.as_uri()}/{name}-{i}.jpg"}
    if name == "web":
        job["dst"] = f"{out.as_uri()}/{i}/"
    if name == "product_zoom":
        job["watermark"] = photo("rgba").as_uri()
    return job


def _service(backend: Any, out: Path) -> Any:
    from support.corpus import PHOTOS

    from imgworker.core.limits import Limits
    from imgworker.jobs.service import Service
    from imgworker.pipeline import PipelineSet
    from imgworker.stores import FileStore, Stores

    pset = PipelineSet.load(str(REPO / "pipelines"), backend.name)
    return Service(Stores({"file": FileStore([str(out), str(PHOTOS)])}), backend, Limits(), pset.current)


def handle(svc: Any, name: str, job: dict[str, Any]) -> dict[str, Any]:
    """One job: ``{"ms": ...}``, or ``{"error": ...}`` for a job that failed (recorded, never raised: one bad
    job must not end a 10-minute device run and lose every later figure)."""
    try:
        return {"ms": svc.handle(json.dumps(job).encode(), pipeline=name)["ms"]}
    except Exception as exc:
        return {"error": {"type": type(exc).__name__, "code": str(getattr(exc, "code", "")),
                          "message": str(exc)[:300], "src": job.get("src", "")}}


def _cpu_chunk(args: tuple[str, list[dict[str, Any]], str]) -> list[dict[str, Any]]:
    from imgworker.backends.cpu import CpuBackend

    name, jobs, out = args
    svc = _service(CpuBackend(), Path(out))
    return [handle(svc, name, j) for j in jobs]


def tally(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Images/s over the jobs that succeeded, their per-stage ms, and the failures (count, first five)."""
    ms = [r["ms"] for r in results if "ms" in r]
    errors = [r["error"] for r in results if "error" in r]
    return {"img_s": round(len(ms) / seconds, 1) if seconds > 0 else 0.0, "ok": len(ms), "failed": len(errors),
            "errors": errors[:5], "ms": ms}


def run_gpu(svc: Any, name: str, jobs: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    for j in jobs[: len(KINDS)]:  # warm-up: kernels compiled, caches filled
        handle(svc, name, j)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda j: handle(svc, name, j), jobs))
    return tally(results, time.perf_counter() - t0)


def _stages(ms: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for m in ms for k in m})
    return {k: round(statistics.fmean(m.get(k, 0.0) for m in ms), 2) for k in keys}


# Where the GPU jobs decoded and encoded (pipeline/array_run.py): jobs with each decode route, and outputs per
# encode route, summed over the run. The per-stage ms above include decode_gpu / encode_gpu (the device's
# share of a batched call) next to the CPU's decode / encode.
ROUTES = {"decode_gpu": "jobs_decode_gpu", "decode_routed_cpu": "jobs_decode_routed_cpu",
          "decode_gpu_refused": "jobs_decode_gpu_refused"}
COUNTS = {"encode_gpu_outputs": "outputs_encode_gpu", "encode_routed_cpu": "outputs_encode_routed_cpu",
          "encode_gpu_failed": "outputs_encode_gpu_failed"}


def _routes(ms: list[dict[str, float]]) -> dict[str, float]:
    out = {name: float(sum(1 for m in ms if key in m)) for key, name in ROUTES.items()}
    out.update({name: float(sum(m.get(key, 0.0) for m in ms)) for key, name in COUNTS.items()})
    reasons = sorted({k for m in ms for k in m if k.startswith(("decode_routed_cpu_", "encode_routed_cpu_"))})
    out.update({k: float(sum(m.get(k, 0.0) for m in ms)) for k in reasons})
    return out


def _compare(svc: Any, cpu_pool: Any, name: str, srcs: list[Path], tmp: Path, args: Any) -> dict[str, Any]:
    jobs = [_job(name, srcs[i % len(srcs)], tmp, i) for i in range(args.jobs)]
    g = run_gpu(svc, name, jobs, args.threads)
    chunks = [(name, jobs[p :: args.procs], str(tmp)) for p in range(args.procs)]
    t0 = time.perf_counter()
    c = tally([r for part in cpu_pool.map(_cpu_chunk, chunks) for r in part], time.perf_counter() - t0)
    return {
        "gpu_img_s": g["img_s"], "cpu_img_s": c["img_s"],
        "ratio": round(g["img_s"] / c["img_s"], 2) if c["img_s"] else None,
        "gpu_failed": g["failed"], "cpu_failed": c["failed"], "errors": g["errors"] + c["errors"],
        "gpu_ms": _stages(g["ms"]), "cpu_ms": _stages(c["ms"]), "gpu_routes": _routes(g["ms"]),
    }


def main() -> None:
    from support.corpus import photo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=96)
    ap.add_argument("--threads", type=int, default=32, help="GPU backend job threads")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="CPU worker processes")
    ap.add_argument("--numpy", action="store_true", help="the numpy backend instead of CuPy (no GPU)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    import numpy as np

    from imgworker.backends.gpu import GpuBackend

    gpu = GpuBackend(np, name="numpy") if args.numpy else GpuBackend(max_batch=max(1, args.threads // 2),
                                                                     max_wait_ms=10)
    tmp = Path(tempfile.mkdtemp(prefix="plbench-"))
    srcs = [photo(k) for k in KINDS]
    summary: dict[str, Any] = {"jobs": args.jobs, "threads": args.threads, "procs": args.procs,
                               "backend": gpu.name, "load": os.getloadavg(), "pipelines": {}}
    svc = _service(gpu, tmp)
    # Spawned, not forked: a child forked after libvips started its threads can deadlock. One pool for the
    # whole run, warmed up with one job per process, so process start-up is not in the CPU figures.
    cpu_pool = ProcessPoolExecutor(args.procs, mp_context=multiprocessing.get_context("spawn"))
    list(cpu_pool.map(_cpu_chunk, [("thumbnail", [_job("thumbnail", srcs[0], tmp, -1 - p)], str(tmp))
                                   for p in range(args.procs)]))  # (a failed warm-up job is only recorded)
    for name in PIPELINES:
        try:
            summary["pipelines"][name] = _compare(svc, cpu_pool, name, srcs, tmp, args)
        except Exception as exc:  # e.g. a broken CPU pool: this pipeline's figures are lost, not the others'
            summary["pipelines"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, json.dumps(summary["pipelines"][name]), flush=True)
        if args.out:  # after each pipeline: a timeout keeps what was measured
            Path(args.out).write_text(json.dumps(summary, indent=1))
    gpu.close()
    cpu_pool.shutdown()
    figures = summary["pipelines"].values()
    summary["failed"] = sum(f.get("gpu_failed", 0) + f.get("cpu_failed", 0) + ("error" in f) for f in figures)
    text = json.dumps(summary, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    sys.exit(1 if summary["failed"] else 0)  # every figure is written; the run still reports the failures


if __name__ == "__main__":
    main()
