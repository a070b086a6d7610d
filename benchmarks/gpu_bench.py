"""GPU backend vs CPU backend throughput on 13-20 MP JPEGs -> 512 px and 2048 px JPEG q85.

    python benchmarks/gpu_bench.py [--images 96] [--threads 32] [--json out.json]

CPU: CpuBackend (libvips thumbnail) in one process per core, VIPS_CONCURRENCY=1 (the worker's prefork
model). GPU: one process, GpuBackend called from job threads (the worker's concurrency), so its
micro-batcher forms batches; once with CPU decode (shrink-on-load; --threads, batches of 8) and once with
nvImageCodec GPU decode when installed (--decode-threads, batches of --decode-batch, --decode-images
jobs), each with the mean per-job stage times of that run (decode_gpu is the job's share of the batched,
synchronised decode call). Then the GPU decoder alone on whole batches (its ceiling), a per-stage
breakdown (profile mode: each stage synchronised and timed, batch of 1) and, if it works, nvImageCodec's
GPU JPEG encoder on a batch of outputs (measured beside the pipeline, not used by it).
Without a GPU, --fake runs the GPU backend with xp=numpy (checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgworker.contract import ResizeSpec
from imgworker.limits import Limits

CORPUS = Path(os.environ.get("IMGWORKER_CORPUS") or Path(__file__).resolve().parents[2] / "shared/corpus")
PHOTOS = ["kleiber_6028x3391_baseline.jpg", "seeding_5312x2988_progressive.jpg", "dragonfly_4224x3168_baseline.jpg"]
SIZES = (512, 2048)
LIMITS = Limits()

_sources: list[bytes] = []


def _cpu_init(sources: list[bytes]) -> None:
    global _sources
    _sources = sources


def _cpu_job(args: tuple[int, int]) -> int:
    from imgworker.backends.cpu import CpuBackend

    i, size = args
    return len(CpuBackend().resize(_sources[i % len(_sources)], ResizeSpec(width=size, quality=85), LIMITS).data)


def bench_cpu(sources: list[bytes], n: int, size: int, procs: int) -> dict[str, float]:
    os.environ["VIPS_CONCURRENCY"] = "1"  # read by libvips when each spawned child starts
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs, initializer=_cpu_init, initargs=(sources,)) as pool:
        pool.map(_cpu_job, [(i, size) for i in range(procs * 2)])  # warm up every process
        t0 = time.perf_counter()
        pool.map(_cpu_job, [(i, size) for i in range(n)], chunksize=1)
        wall = time.perf_counter() - t0
    return {"images_per_s": n / wall, "wall_s": wall, "processes": procs}


STAGES = ("decode", "decode_gpu", "decode_gpu_batch", "gpu_batch", "queue_and_gpu", "encode", "batch_size")


def bench_gpu(backend: Any, sources: list[bytes], n: int, size: int, threads: int) -> dict[str, Any]:
    spec = ResizeSpec(width=size, quality=85)

    def job(i: int) -> dict[str, float]:
        return backend.resize(sources[i % len(sources)], spec, LIMITS).timings

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(job, range(min(n, threads))))  # warm up: kernels, pinned buffers, band caches
        backend.batcher.batch_sizes.clear()
        t0 = time.perf_counter()
        timings = list(pool.map(job, range(n)))
        wall = time.perf_counter() - t0
    sizes = backend.batcher.batch_sizes or [1]
    # Mean ms per job and stage in this run ("decode": the CPU stage, only the header check when decode_gpu
    # is set); stages overlap across jobs, so they do not add up to 1/throughput.
    stages = {k: round(statistics.mean(t.get(k, 0.0) for t in timings), 2) for k in STAGES}
    return {
        "images_per_s": n / wall,
        "wall_s": wall,
        "threads": threads,
        "max_batch": backend.batcher.max_batch,
        "mean_batch": statistics.mean(sizes),
        "gpu_decoded": sum(1 for t in timings if "decode_gpu" in t),
        "gpu_refused": sum(1 for t in timings if "decode_gpu_refused" in t),
        "stages_ms_mean": stages,
    }


def bench_mode(make: Any, mode: str, kw: dict[str, Any], sources: list[bytes], n: int, size: int, threads: int) -> Any:
    backend = make(gpu_decode=mode, **kw)
    try:
        return bench_gpu(backend, sources, n, size, threads)
    finally:
        backend.close()


def guarded(fn: Any, *args: Any) -> dict[str, Any]:
    """One measurement; an exception is recorded in the JSON instead of losing the whole run's figures."""
    try:
        out: dict[str, Any] = fn(*args)
        return out
    except Exception as exc:
        import traceback

        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def decoder_only(cp: Any, sources: list[bytes], batch: int) -> dict[str, Any]:
    """nvImageCodec alone: whole batches of the photos, decode synchronised; the GPU decode ceiling."""
    from imgworker.backends.gpu import decode, detect

    dec = decode.BatchDecoder(cp, detect.nvimgcodec(), os.cpu_count() or 0)
    jpegs = [sources[i % len(sources)] for i in range(batch)]
    out: dict[str, Any] = {"batch": batch}
    for name, group in [("mixed", jpegs)] + [(f"photo{i}", [s] * batch) for i, s in enumerate(sources)]:
        dec.decode(group)  # warm-up
        arrays, ms = dec.decode(group)
        ok = sum(a is not None for a in arrays)
        mpix = sum(int(a.shape[0]) * int(a.shape[1]) for a in arrays if a is not None) / 1e6
        out[name] = {
            "ms_per_batch": round(ms, 1),
            "images_per_s": round(ok / ms * 1000, 1),
            "decoded": ok,
            "mpix_per_s": round(mpix / ms * 1000, 1),
        }
        del arrays
    return out


def gpu_encode_probe(cp: Any, size: int, batch: int = 32) -> dict[str, Any]:
    """nvImageCodec's JPEG encoder (GPU) on a batch of device-resident size x size*9/16 images, q85."""
    try:
        from imgworker.backends.gpu import detect

        mod: Any = detect.nvimgcodec()
        enc = mod.Encoder()
        imgs = [cp.random.randint(0, 256, size=(size * 9 // 16, size, 3), dtype=cp.uint8) for _ in range(batch)]
        params = mod.EncodeParams(quality_type=mod.QualityType.QUALITY, quality_value=85)
        enc.encode(imgs, "jpeg", params=params)
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        streams = enc.encode(imgs, "jpeg", params=params)
        cp.cuda.Device().synchronize()
        ms = (time.perf_counter() - t0) * 1000
        ok = sum(s is not None for s in streams)
        return {"batch": batch, "ms_per_image": round(ms / batch, 2), "encoded": ok, "note": "random pixels"}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def stage_breakdown(make: Any, sources: list[bytes], size: int, gpu_decode: str) -> dict[str, float]:
    """Mean ms per image and stage, one image at a time, each stage synchronised (profile mode)."""
    backend = make(gpu_decode=gpu_decode, profile=True, max_batch=1, max_wait_ms=0)
    spec = ResizeSpec(width=size, quality=85)
    stages: dict[str, list[float]] = {}
    try:
        for rep in range(4):
            for src in sources:
                t0 = time.perf_counter()
                r = backend.resize(src, spec, LIMITS)
                total = (time.perf_counter() - t0) * 1000
                if rep == 0:
                    continue  # warm-up pass
                for k in ("decode", "decode_gpu", "orient", "upload", "resize", "download", "encode"):
                    if k in r.timings:
                        stages.setdefault(k, []).append(r.timings[k])
                stages.setdefault("total", []).append(total)
    finally:
        backend.close()
    # "decode" covers the CPU stage (header + CPU decode, or only the header when decode_gpu is set).
    return {k: round(statistics.mean(v), 2) for k, v in stages.items()}


def kernel_only(cp: Any, src_hw: tuple[int, int], size: int) -> dict[str, float]:
    """The resize kernels alone on a device-resident uint8 image, timed with CUDA events."""
    from imgworker.backends.gpu import kernels

    h, w = src_hw
    img = cp.random.randint(0, 256, size=(h, w, 3), dtype=cp.uint8)
    out_h = round(h * size / w)
    for _ in range(3):
        kernels.resize(cp, img, size, out_h)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    reps = 20
    for _ in range(reps):
        kernels.resize(cp, img, size, out_h)
    end.record()
    end.synchronize()
    ms = cp.cuda.get_elapsed_time(start, end) / reps
    return {"ms": round(ms, 3), "src_mp": round(h * w / 1e6, 1), "gb_per_s_read": round(h * w * 3 / ms / 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--decode-threads", type=int, default=64)
    ap.add_argument("--decode-batch", type=int, default=32)
    ap.add_argument("--decode-images", type=int, default=0, help="jobs for the GPU-decode run (0: 4 x --images)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fake", action="store_true", help="no GPU: run the pipeline with xp=numpy")
    args = ap.parse_args()

    from imgworker.backends.gpu import GpuBackend, detect

    sources = [(CORPUS / "photos" / p).read_bytes() for p in PHOTOS]
    result: dict[str, Any] = {"images": args.images, "photos": PHOTOS, "cpu_cores": os.cpu_count()}
    if args.fake:
        import numpy as np

        def make(**kw: Any) -> GpuBackend:
            backend = GpuBackend(xp=np, **kw)
            # Exercise the GPU-decode bookkeeping: the numpy engine refuses each JPEG, libvips decodes it.
            backend.gpu_decode = kw.get("gpu_decode", "never")
            return backend

        result["device"] = "numpy (fake)"
    else:
        import cupy as cp

        def make(**kw: Any) -> GpuBackend:
            return GpuBackend(**kw)

        props = cp.cuda.runtime.getDeviceProperties(0)
        result["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        result["cupy"] = cp.__version__
        result["nvimgcodec"] = detect.nvimgcodec() is not None
    modes = ["never"] + (["always"] if result.get("nvimgcodec") or args.fake else [])
    for size in SIZES:
        entry: dict[str, Any] = {}
        entry["cpu"] = bench_cpu(sources, args.images, size, args.procs)
        for mode in modes:
            if mode == "always":  # enough concurrent jobs to fill the decoder's batches
                kw: dict[str, Any] = {"max_batch": args.decode_batch, "max_wait_ms": 10}
                n, threads = args.decode_images or 4 * args.images, args.decode_threads
            else:
                kw = {"max_batch": 8, "max_wait_ms": 5}
                n, threads = args.images, args.threads
            entry[f"gpu_decode_{mode}"] = guarded(bench_mode, make, mode, kw, sources, n, size, threads)
            if "images_per_s" in entry[f"gpu_decode_{mode}"]:
                ratio = entry[f"gpu_decode_{mode}"]["images_per_s"] / entry["cpu"]["images_per_s"]
                entry[f"gpu_decode_{mode}"]["ratio_over_cpu"] = round(ratio, 2)
            entry[f"stages_ms_decode_{mode}"] = guarded(stage_breakdown, make, sources, size, mode)
        rates = [entry[f"gpu_decode_{m}"].get("images_per_s", 0.0) for m in modes]
        entry["gpu_best_images_per_s"] = max(rates)
        entry["ratio_gpu_over_cpu"] = round(max(rates) / entry["cpu"]["images_per_s"], 2)
        if not args.fake:
            entry["kernel_only_20mp"] = guarded(kernel_only, cp, (3391, 6028), size)
            if result["nvimgcodec"]:
                entry["jpeg_encode_gpu"] = gpu_encode_probe(cp, size)
                if size == SIZES[0]:
                    result["decoder_only"] = guarded(decoder_only, cp, sources, args.decode_batch)
        result[f"to_{size}px"] = entry
        print(json.dumps({f"to_{size}px": entry}), flush=True)
        if args.json:  # after each size, so a timeout still leaves the figures so far
            args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
