"""GPU backend vs CPU backend throughput on 13-20 MP JPEGs -> 512 px and 2048 px JPEG q85.

    python benchmarks/gpu/throughput.py [--images 96] [--gpu-images 256] [--gpus-procs 1,2,4] [--encode auto,never]

Two workloads: "baseline" (kleiber + dragonfly: every file decoded by the hardware JPEG engines) and
"mixed" (kleiber + seeding (progressive) + dragonfly, cycled). CPU: CpuBackend (libvips thumbnail) in one
process per core, VIPS_CONCURRENCY=1 (the worker's prefork model). GPU: P worker processes sharing the
card (P from --gpu-procs), each with its own CUDA context, nvImageCodec decoder/encoder, memory_fraction
0.5 / P and --gpu-threads / P job threads calling GpuBackend.resize (batches <= half its threads, <= 32);
the jobs are handed out from one shared counter, as a job server would. The default policy decodes the
baseline JPEGs on the GPU and routes progressive ones to libvips; --encode compares the GPU JPEG encode
("auto") with libvips' ("never"). Each GPU case reports images/s, the ratio to the CPU worker measured in
the same run and the mean per-job stage times. Also: nvImageCodec alone on whole batches (the decode
ceiling) and a per-stage breakdown (profile mode: one image at a time, each stage synchronised).
Without a GPU, --fake runs the GPU backend with xp=numpy (checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.harness import corpus_dir
from imgworker.core.contract import ResizeSpec
from imgworker.core.limits import Limits

CORPUS = corpus_dir()
PHOTOS = ["kleiber_6028x3391_baseline.jpg", "seeding_5312x2988_progressive.jpg", "dragonfly_4224x3168_baseline.jpg"]
WORKLOADS = {"baseline": (0, 2), "mixed": (0, 1, 2)}  # indices into PHOTOS
SIZES = (512, 2048)
LIMITS = Limits()
STAGES = ("decode", "decode_gpu", "decode_gpu_batch", "gpu_batch", "queue_and_gpu", "encode", "encode_gpu")
SPLIT_MEMORY = 0.5  # the card's share for all GPU processes together, as create_backend splits it

_sources: list[bytes] = []


def _cpu_init(sources: list[bytes]) -> None:
    global _sources
    _sources = sources


def _cpu_job(args: tuple[tuple[int, ...], int, int]) -> int:
    from imgworker.backends.cpu import CpuBackend

    idx, i, size = args
    src = _sources[idx[i % len(idx)]]
    return len(CpuBackend().resize(src, ResizeSpec(width=size, quality=85), LIMITS).data)


def bench_cpu(pool: Any, idx: tuple[int, ...], n: int, size: int, procs: int) -> dict[str, float]:
    pool.map(_cpu_job, [(idx, i, size) for i in range(procs * 2)])  # warm up every process
    t0 = time.perf_counter()
    pool.map(_cpu_job, [(idx, i, size) for i in range(n)], chunksize=1)
    wall = time.perf_counter() - t0
    return {"images_per_s": round(n / wall, 1), "wall_s": round(wall, 2), "processes": procs}


# --- GPU worker processes ------------------------------------------------------------------------------


def _make_backend(fake: bool, **kw: Any) -> Any:
    from imgworker.backends.gpu import GpuBackend

    if not fake:
        return GpuBackend(**kw)
    import numpy as np

    backend = GpuBackend(xp=np, **{**kw, "gpu_encode": "never"})  # numpy has no GPU encoder
    # Exercise the GPU-decode bookkeeping: the numpy engine refuses each JPEG, libvips decodes it.
    backend.gpu_decode, backend.hardware_jpeg = kw.get("gpu_decode", "auto"), True
    return backend


def _run_jobs(backend: Any, sources: list[bytes], spec: ResizeSpec, threads: int, take: Any) -> list[Any]:
    """``threads`` job threads, each taking job numbers from ``take()`` until it returns None."""
    out: list[Any] = []

    def loop() -> None:
        while (i := take()) is not None:
            try:
                out.append(backend.resize(sources[i % len(sources)], spec, LIMITS).timings)
            except Exception as exc:
                out.append(exc)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return out


def _gpu_case(rank: int, case: dict[str, Any], photos: list[bytes], counter: Any, cmd_q: Any, res_q: Any) -> None:
    sources = [photos[i] for i in case["idx"]]
    spec = ResizeSpec(width=case["size"], quality=85)
    backend = _make_backend(
        case["fake"],
        max_batch=case["max_batch"],
        max_wait_ms=10,
        memory_fraction=case["memory_fraction"],
        gpu_encode=case["encode"],
        # Decoder layout (issue 17, benchmarks/gpu/ceiling.py sweeps it); absent: one Decoder, nvImageCodec's batching.
        decoders=case.get("decoders", 1),
        batch_single=case.get("batch_single", False),
    )
    try:
        warm = iter(range(case["warmup"]))
        _run_jobs(backend, sources, spec, case["threads"], lambda: next(warm, None))
        backend.batcher.batch_sizes.clear()
        res_q.put(("ready", rank, None))
        if cmd_q.get() != "go":  # the parent gave up on this case (another process failed): stop
            cmd_q.put(None)
            return
        n = case["n"]

        def take() -> int | None:
            with counter.get_lock():
                i = int(counter.value)
                counter.value = i + 1
            return i if i < n else None

        t0 = time.monotonic()  # system-wide clock: comparable across the processes
        results = _run_jobs(backend, sources, spec, case["threads"], take)
        t1 = time.monotonic()
        timings = [r for r in results if isinstance(r, dict)]
        errors = [f"{type(r).__name__}: {r}"[:200] for r in results if not isinstance(r, dict)]
        stats = {
            "t0": t0,
            "t1": t1,
            "jobs": len(results),
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "batches": list(backend.batcher.batch_sizes),
            "gpu_decoded": sum(1 for t in timings if "decode_gpu" in t),
            "routed_cpu": sum(1 for t in timings if "decode_routed_cpu" in t),
            "gpu_encoded": sum(1 for t in timings if "encode_gpu" in t and "encode_gpu_failed" not in t),
            "stage_sums": {k: sum(t.get(k, 0.0) for t in timings) for k in STAGES},
        }
        res_q.put(("done", rank, stats))
    finally:
        backend.close()


def _gpu_worker(rank: int, photos: list[bytes], fake: bool, counter: Any, cmd_q: Any, res_q: Any) -> None:
    if not fake:  # CUDA context, nvImageCodec and the kernels now, while the parent does other work
        from imgworker.backends.gpu import detect, kernels

        kernels.module(detect.require_gpu())
        detect.hardware_jpeg()
    while (cmd := cmd_q.get()) is not None:
        try:
            _gpu_case(rank, cmd, photos, counter, cmd_q, res_q)
        except BaseException as exc:
            res_q.put(("error", rank, f"{type(exc).__name__}: {exc}"[:500]))
        gc.collect()  # the case's backend (decoder, encoder, streams) before the next one is built
        if not fake:
            import cupy

            cupy.get_default_memory_pool().free_all_blocks()


class GpuProcs:
    """Up to ``size`` spawned GPU worker processes, kept across cases (CUDA start-up is paid once)."""

    def __init__(self, size: int, photos: list[bytes], fake: bool) -> None:
        self.size, self.photos, self.fake = size, photos, fake
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.counter = ctx.Value("q", 0)
        self.res_q: Any = ctx.Queue()
        self.cmd_qs: list[Any] = [ctx.Queue() for _ in range(self.size)]
        self.procs = [
            ctx.Process(target=_gpu_worker, args=(r, self.photos, self.fake, self.counter, q, self.res_q), daemon=True)
            for r, q in enumerate(self.cmd_qs)
        ]
        for p in self.procs:
            p.start()

    def _wait(self, count: int, kind: str, timeout: float) -> list[Any]:
        got = []
        for _ in range(count):
            what, rank, payload = self.res_q.get(timeout=timeout)
            if what == "error":
                raise RuntimeError(f"GPU process {rank}: {payload}")
            if what != kind:
                raise RuntimeError(f"GPU process {rank}: expected {kind}, got {what}")
            got.append(payload)
        return got

    def case(self, procs: int, case: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._case(procs, case)
        except BaseException:
            self.close()  # a failed or hung process: a fresh set for the next case
            self._start()
            raise

    def _case(self, procs: int, case: dict[str, Any]) -> dict[str, Any]:
        for q in self.cmd_qs[:procs]:
            q.put(case)
        self._wait(procs, "ready", 60)  # built and warmed up: every process starts together
        with self.counter.get_lock():
            self.counter.value = 0
        for q in self.cmd_qs[:procs]:
            q.put("go")
        stats = self._wait(procs, "done", 60)
        wall = max(s["t1"] for s in stats) - min(s["t0"] for s in stats)
        jobs = sum(s["jobs"] for s in stats)
        batches = [b for s in stats for b in s["batches"]] or [1]
        return {
            "images_per_s": round(jobs / wall, 1),
            "wall_s": round(wall, 2),
            "processes": procs,
            "threads_per_process": case["threads"],
            "max_batch": case["max_batch"],
            "mean_batch": round(statistics.mean(batches), 1),
            "gpu_encode": case["encode"],
            "errors": sum(s["errors"] for s in stats),
            "first_error": next((s["first_error"] for s in stats if s["first_error"]), None),
            **{k: sum(s[k] for s in stats) for k in ("gpu_decoded", "routed_cpu", "gpu_encoded")},
            # Mean ms per job and stage; stages overlap across jobs, so they do not add up to 1/throughput.
            "stages_ms_mean": {k: round(sum(s["stage_sums"][k] for s in stats) / max(jobs, 1), 2) for k in STAGES},
        }

    def close(self) -> None:
        for q in self.cmd_qs:
            q.put(None)
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


# --- single measurements ---------------------------------------------------------------------------------


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
    out: dict[str, Any] = {"batch": batch}
    for name, i in (("kleiber", 0), ("dragonfly", 2)):
        group = [sources[i]] * batch
        dec.decode(group)  # warm-up
        arrays, ms = dec.decode(group)
        ok = sum(a is not None for a in arrays)
        out[name] = {"ms_per_batch": round(ms, 1), "images_per_s": round(ok / ms * 1000, 1), "decoded": ok}
        del arrays
    return out


def stage_breakdown(fake: bool, sources: list[bytes], size: int, encode: str) -> dict[str, float]:
    """Mean ms per image and stage, one image at a time, each stage synchronised (profile mode)."""
    backend = _make_backend(fake, profile=True, max_batch=1, max_wait_ms=0, gpu_encode=encode)
    spec = ResizeSpec(width=size, quality=85)
    stages: dict[str, list[float]] = {}
    try:
        for rep in range(3):
            for src in sources:
                t0 = time.perf_counter()
                r = backend.resize(src, spec, LIMITS)
                total = (time.perf_counter() - t0) * 1000
                if rep == 0:
                    continue  # warm-up pass
                for k in ("decode", "decode_gpu", "orient", "upload", "resize", "download", "encode", "encode_gpu"):
                    if k in r.timings:
                        stages.setdefault(k, []).append(r.timings[k])
                stages.setdefault("total", []).append(total)
    finally:
        backend.close()
    return {k: round(statistics.mean(v), 2) for k, v in stages.items()}


def gpu_case(args: Any, idx: tuple[int, ...], size: int, procs: int, encode: str) -> dict[str, Any]:
    threads = max(1, args.gpu_threads // procs)
    return {
        "idx": idx,
        "size": size,
        "n": args.gpu_images,
        "threads": threads,
        "warmup": threads,
        "max_batch": max(1, min(args.max_batch, threads // 2)),  # half the threads in the GPU stage
        "memory_fraction": SPLIT_MEMORY / procs,
        "encode": encode,
        "fake": args.fake,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96, help="jobs per CPU-worker measurement")
    ap.add_argument("--gpu-images", type=int, default=256, help="jobs per GPU measurement (all processes)")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="CPU worker processes")
    ap.add_argument("--gpu-procs", default="1,2,4", help="GPU worker processes per card to compare")
    ap.add_argument("--gpu-threads", type=int, default=64, help="job threads over all GPU processes")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--encode", default="auto,never", help="gpu_encode settings to compare")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fake", action="store_true", help="no GPU: run the pipeline with xp=numpy")
    args = ap.parse_args()
    gpu_procs = [int(p) for p in args.gpu_procs.split(",")]
    encodes = args.encode.split(",")

    photos = [(CORPUS / "photos" / p).read_bytes() for p in PHOTOS]
    result: dict[str, Any] = {"images": args.images, "gpu_images": args.gpu_images, "photos": PHOTOS}
    result["cpu_cores"] = os.cpu_count()

    def save() -> None:  # after every case, so a timeout still leaves the figures so far
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))

    os.environ["VIPS_CONCURRENCY"] = "1"  # read by libvips when each spawned child starts
    gpus = GpuProcs(max(gpu_procs), photos, args.fake)  # CUDA start-up in the children overlaps the work below
    cpu_pool = mp.get_context("spawn").Pool(args.procs, initializer=_cpu_init, initargs=(photos,))
    try:
        if args.fake:
            result["device"] = "numpy (fake)"
        else:
            import cupy as cp

            from imgworker.backends.gpu import detect

            props = cp.cuda.runtime.getDeviceProperties(0)
            result["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            result |= {"cupy": cp.__version__, "nvimgcodec": detect.nvimgcodec() is not None}
            result["hardware_jpeg"] = detect.hardware_jpeg()
            if result["nvimgcodec"]:
                result["decoder_only"] = guarded(decoder_only, cp, photos, args.max_batch)
        for size in [int(s) for s in args.sizes.split(",")]:
            entry: dict[str, Any] = result.setdefault(f"to_{size}px", {})
            for workload, idx in WORKLOADS.items():
                w: dict[str, Any] = entry.setdefault(workload, {})
                w["cpu"] = bench_cpu(cpu_pool, idx, args.images, size, args.procs)
                for encode in encodes:
                    for procs in gpu_procs:
                        case = gpu_case(args, idx, size, procs, encode)
                        r = w[f"gpu_p{procs}_encode_{encode}"] = guarded(gpus.case, procs, case)
                        if "images_per_s" in r:
                            r["ratio_over_cpu"] = round(r["images_per_s"] / w["cpu"]["images_per_s"], 2)
                            print(f"{size}px {workload} P={procs} encode={encode}: {r['images_per_s']}/s", flush=True)
                        save()
            sources = [photos[i] for i in WORKLOADS["baseline"]]
            entry["stages_ms_baseline"] = {e: guarded(stage_breakdown, args.fake, sources, size, e) for e in encodes}
            save()
    finally:
        gpus.close()
        cpu_pool.terminate()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
