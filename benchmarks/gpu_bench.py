"""GPU backend vs CPU backend throughput on 13-20 MP JPEGs -> 512 px and 2048 px JPEG q85.

    python benchmarks/gpu_bench.py [--images 96] [--threads 32] [--json out.json]

Two workloads: "mixed" (kleiber + seeding (progressive) + dragonfly, cycled) and "baseline" (kleiber +
dragonfly: the hardware-decode ceiling). CPU: CpuBackend (libvips thumbnail) in one process per core,
VIPS_CONCURRENCY=1 (the worker's prefork model). GPU: one process, GpuBackend called from job threads (the
worker's concurrency), so its micro-batcher forms batches; with the default policy gpu_decode="auto"
(baseline JPEGs decoded by nvImageCodec in the batches, progressive ones by libvips on the job threads;
--decode-threads, batches of --decode-batch, --decode-images jobs) and, on the mixed workload, with CPU
decode only ("never": --threads, batches of 8); each with the mean per-job stage times of that run
(decode_gpu is the job's share of the batched, synchronised decode call). Then the GPU decoder alone on
whole batches (its ceiling), a per-stage breakdown (profile mode: each stage synchronised, batch of 1) and
nvImageCodec's GPU JPEG encoder against libvips' on the real resized photos (bytes, PSNR against the
unencoded resize, ms per image), measured beside the pipeline, which encodes with libvips.
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
WORKLOADS = {"mixed": (0, 1, 2), "baseline": (0, 2)}  # indices into PHOTOS
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
ENCODE_Q = 85


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
        "routed_cpu": sum(1 for t in timings if "decode_routed_cpu" in t),
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


def _psnr(a: Any, b: Any) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def stream_bytes(stream: Any) -> bytes:
    """An nvImageCodec CodeStream's encoded bytes (it exposes them through the buffer protocol)."""
    import numpy as np

    try:
        return bytes(memoryview(stream))
    except TypeError:
        return np.asarray(stream, dtype=np.uint8).tobytes()


def encode_compare(cp: Any, sources: list[bytes], size: int, batch: int = 32) -> dict[str, Any]:
    """libvips' JPEG encoder (the pipeline's, optimize_coding) against nvImageCodec's on the GPU, q85 4:2:0,
    on the photos resized to ``size`` (libvips thumbnail): mean bytes, PSNR of the decoded output against
    the unencoded resize, ms per image (libvips: one image at a time on one thread; GPU: a batch)."""
    import pyvips

    from imgworker.backends.gpu import codec, detect

    refs = [pyvips.Image.thumbnail_buffer(s, size).numpy() for s in sources]

    def quality(datas: list[bytes]) -> dict[str, float]:
        decoded = [pyvips.Image.new_from_buffer(d, "").numpy() for d in datas]
        return {
            "bytes_mean": round(statistics.mean(len(d) for d in datas)),
            "psnr_db": round(statistics.mean(_psnr(r, d) for r, d in zip(refs, decoded, strict=True)), 2),
        }

    cpu = [codec.encode_array(r, "jpeg", ENCODE_Q, (255, 255, 255)) for r in refs]
    t0 = time.perf_counter()
    for i in range(batch):
        codec.encode_array(refs[i % len(refs)], "jpeg", ENCODE_Q, (255, 255, 255))
    out: dict[str, Any] = {
        "libvips": {**quality(cpu), "ms_per_image": round((time.perf_counter() - t0) * 1000 / batch, 2)}
    }
    mod: Any = detect.nvimgcodec()
    if cp is None or mod is None:
        return out
    enc = mod.Encoder()
    dev = [cp.asarray(refs[i % len(refs)]) for i in range(batch)]
    for name, optimized in (("gpu_optimized_huffman", True), ("gpu_standard_huffman", False)):
        params = mod.EncodeParams(
            quality_type=mod.QualityType.QUALITY,
            quality_value=ENCODE_Q,
            chroma_subsampling=mod.ChromaSubsampling.CSS_420,
            jpeg_encode_params=mod.JpegEncodeParams(optimized_huffman=optimized),
        )
        enc.encode(dev, "jpeg", params=params)  # warm-up
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        streams = enc.encode(dev, "jpeg", params=params)
        cp.cuda.Device().synchronize()
        ms = (time.perf_counter() - t0) * 1000
        datas = [stream_bytes(streams[i]) for i in range(len(refs))]
        out[name] = {
            **quality(datas),
            "ms_per_image": round(ms / batch, 2),
            "encoded": sum(x is not None for x in streams),
        }
    return out


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


def ratio(entry: dict[str, Any], over: dict[str, Any]) -> None:
    if "images_per_s" in entry and "images_per_s" in over:
        entry["ratio_over_cpu"] = round(entry["images_per_s"] / over["images_per_s"], 2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--decode-threads", type=int, default=64)
    ap.add_argument("--decode-batch", type=int, default=32)
    ap.add_argument("--decode-images", type=int, default=0, help="jobs for the GPU-decode runs (0: 4 x --images)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fake", action="store_true", help="no GPU: run the pipeline with xp=numpy")
    args = ap.parse_args()

    from imgworker.backends.gpu import GpuBackend, detect

    photos = [(CORPUS / "photos" / p).read_bytes() for p in PHOTOS]
    result: dict[str, Any] = {"images": args.images, "photos": PHOTOS, "cpu_cores": os.cpu_count()}
    cp: Any = None
    if args.fake:
        import numpy as np

        def make(**kw: Any) -> GpuBackend:
            backend = GpuBackend(xp=np, **kw)
            # Exercise the GPU-decode bookkeeping: the numpy engine refuses each JPEG, libvips decodes it.
            backend.gpu_decode, backend.hardware_jpeg = kw.get("gpu_decode", "auto"), True
            return backend

        result["device"] = "numpy (fake)"
    else:
        import cupy

        cp = cupy

        def make(**kw: Any) -> GpuBackend:
            return GpuBackend(**kw)

        props = cp.cuda.runtime.getDeviceProperties(0)
        result["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        result["cupy"] = cp.__version__
        result["nvimgcodec"] = detect.nvimgcodec() is not None
        result["hardware_jpeg"] = detect.hardware_jpeg()
        if result["nvimgcodec"]:
            result["decoder_only"] = guarded(decoder_only, cp, photos, args.decode_batch)
    auto_kw: dict[str, Any] = {"max_batch": args.decode_batch, "max_wait_ms": 10}
    auto_n = args.decode_images or 4 * args.images  # enough concurrent jobs to fill the decoder's batches
    for size in SIZES:
        entry: dict[str, Any] = {}
        for workload, idx in WORKLOADS.items():
            sources = [photos[i] for i in idx]
            w: dict[str, Any] = {"cpu": bench_cpu(sources, args.images, size, args.procs)}
            w["gpu_auto"] = guarded(bench_mode, make, "auto", auto_kw, sources, auto_n, size, args.decode_threads)
            ratio(w["gpu_auto"], w["cpu"])
            if workload == "mixed":
                never_kw = {"max_batch": 8, "max_wait_ms": 5}
                w["gpu_never"] = guarded(bench_mode, make, "never", never_kw, sources, args.images, size, args.threads)
                ratio(w["gpu_never"], w["cpu"])
            w["stages_ms_auto"] = guarded(stage_breakdown, make, sources, size, "auto")
            entry[workload] = w
        entry["encode"] = guarded(encode_compare, cp, photos, size)
        if cp is not None:
            entry["kernel_only_20mp"] = guarded(kernel_only, cp, (3391, 6028), size)
        result[f"to_{size}px"] = entry
        print(json.dumps({f"to_{size}px": entry}), flush=True)
        if args.json:  # after each size, so a timeout still leaves the figures so far
            args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
