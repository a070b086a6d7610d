"""Issue 17's device sweep: decoder layouts against the CPU worker on all cores, engine utilisation beside
every GPU figure, and the hazard checks (outputs verified under load, not only speed).

    python benchmarks/gpu/ceiling.py --json OUT.json [--layouts P:D:B:S,...] [--hazards-only] [--fake]

A layout is P:D:B:S -- P GPU processes on the card, D nvImageCodec Decoders per process (own threads and
streams), batches <= B images, S = on|off for ``nvjpeg_hw_decoder:force_batch_single=1``. Workloads: baseline
JPEGs -> 512 px and -> 2048 px, mixed photos -> 512 px and -> 2048 px (gpu_bench.py's photos; q85; GPU
encode "auto"). Each GPU case: gpu_bench.GpuProcs (jobs from one shared counter), with benchmarks/gpu_util's
Sampler running (JPEG / decoder / SM utilisation, mean and max). Hazards: every photo resized under load
(all job threads, the layout's Decoders) must give the same bytes as a one-thread, one-image run of the same
backend; a single Decoder called from 4 threads at once must give the pixels of a lone call. Each
measurement is guarded (an error is recorded, the rest runs) and the JSON is rewritten after every case.
Without a GPU, --fake runs the numpy backend (checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.gpu import throughput as gpu_bench
from benchmarks.gpu.util import Sampler
from imgworker.core.contract import ResizeSpec

DEFAULT_LAYOUTS = "2:1:16:off,2:2:14:off,2:1:14:on,2:7:14:on,4:1:7:off,4:2:14:off,4:7:14:on,7:1:7:off"
CASES = (("baseline", 512), ("baseline", 2048), ("mixed", 512), ("mixed", 2048))


def parse_layouts(text: str) -> list[dict[str, Any]]:
    out = []
    for item in text.split(","):
        p, d, b, s = item.split(":")
        if s not in ("on", "off") or min(int(p), int(d), int(b)) < 1 or int(d) > int(b):
            raise SystemExit(f"bad layout {item!r}: P:D:B:S with P, D, B >= 1, D <= B and S on|off")
        out.append({"procs": int(p), "decoders": int(d), "max_batch": int(b), "batch_single": s == "on"})
    return out


def case_for(layout: dict[str, Any], idx: tuple[int, ...], size: int, n: int, fake: bool) -> dict[str, Any]:
    # Two job threads per batch slot: half of them do their CPU stages while the other half wait on the GPU.
    threads = max(2 * layout["max_batch"], 64 // layout["procs"])
    return {"idx": idx, "size": size, "n": n, "threads": threads, "warmup": threads, "fake": fake,
            "max_batch": layout["max_batch"], "memory_fraction": gpu_bench.SPLIT_MEMORY / layout["procs"],
            "encode": "auto", "decoders": layout["decoders"], "batch_single": layout["batch_single"]}


def sweep(args: Any, photos: list[bytes], result: dict[str, Any], save: Any) -> None:
    layouts = parse_layouts(args.layouts)
    procs = int(args.procs)
    cpu_pool = mp.get_context("spawn").Pool(procs, initializer=gpu_bench._cpu_init, initargs=(photos,))
    gpus = gpu_bench.GpuProcs(max(lay["procs"] for lay in layouts), photos, args.fake)
    try:
        for workload, size in CASES:
            idx = gpu_bench.WORKLOADS[workload]
            w: dict[str, Any] = result.setdefault("sweep", {}).setdefault(f"{workload}_to_{size}px", {})
            w["cpu"] = gpu_bench.guarded(gpu_bench.bench_cpu, cpu_pool, idx, args.images, size, procs)
            save()
            for lay in layouts:
                single = "on" if lay["batch_single"] else "off"
                name = f"p{lay['procs']}_d{lay['decoders']}_b{lay['max_batch']}_single_{single}"
                with Sampler(args.util_interval) as util:
                    r = gpu_bench.guarded(gpus.case, lay["procs"], case_for(lay, idx, size, args.gpu_images, args.fake))
                r["util"] = util.summary()
                if "images_per_s" in r and "images_per_s" in w["cpu"]:
                    r["ratio_over_cpu"] = round(r["images_per_s"] / w["cpu"]["images_per_s"], 2)
                    jpg = r["util"].get("jpg", {})
                    print(f"{workload} {size}px {name}: {r['images_per_s']}/s ({r['ratio_over_cpu']}x), "
                          f"jpg util mean/max {jpg.get('mean', '-')}/{jpg.get('max', '-')}", flush=True)
                w[name] = r
                save()
    finally:
        gpus.close()
        cpu_pool.terminate()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def hazard_resize(fake: bool, photos: list[bytes], layout: dict[str, Any], threads: int, rounds: int) -> dict[str, Any]:
    """Same backend, same photos: one thread and one image at a time, then ``threads`` threads for ``rounds``
    passes; every loaded output must equal the lone one byte for byte (the pipeline is deterministic)."""
    backend = gpu_bench._make_backend(fake, max_batch=layout["max_batch"], max_wait_ms=10,
                                      decoders=layout["decoders"], batch_single=layout["batch_single"])
    specs = [ResizeSpec(width=512, quality=85), ResizeSpec(width=2048, quality=85)]
    jobs = [(i, s) for i in range(len(photos)) for s in range(len(specs))]
    try:
        ref = {(i, s): _digest(backend.resize(photos[i], specs[s], gpu_bench.LIMITS).data) for i, s in jobs}
        todo = [j for _ in range(rounds) for j in jobs]
        lock, bad, errors, done = threading.Lock(), [], [], [0]

        def loop() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    i, s = todo.pop()
                try:
                    got = _digest(backend.resize(photos[i], specs[s], gpu_bench.LIMITS).data)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                with lock:
                    done[0] += 1
                    if got != ref[(i, s)]:
                        bad.append({"photo": i, "width": specs[s].width})

        pool = [threading.Thread(target=loop) for _ in range(threads)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return {"jobs": done[0], "mismatched": len(bad), "first_mismatch": bad[:3], "errors": len(errors),
                "first_error": errors[:1], "wall_s": round(time.perf_counter() - t0, 2), **layout}
    finally:
        backend.close()


def hazard_shared_decoder(photos: list[bytes], threads: int = 4, rounds: int = 8) -> dict[str, Any]:
    """One nvImageCodec Decoder called from ``threads`` threads at once vs. a lone call (pixels compared)."""
    import cupy as cp

    from imgworker.backends.gpu import decode, detect

    mod = detect.nvimgcodec()
    if mod is None:
        return {"skipped": "nvImageCodec not usable"}
    dec = decode.BatchDecoder(cp, mod, 2)
    sources = [photos[0], photos[2]]  # the baseline ones: the hardware engines' share
    ref = [hashlib.sha256(cp.asnumpy(a).tobytes()).hexdigest() for a in dec.decode(sources)[0]]
    bad, errors = [], []

    def loop() -> None:
        for _ in range(rounds):
            try:
                arrays, _ = dec.decode(sources)
                got = [hashlib.sha256(cp.asnumpy(a).tobytes()).hexdigest() for a in arrays]
                bad.extend(i for i, (g, r) in enumerate(zip(got, ref, strict=True)) if g != r)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"decodes": threads * rounds * len(sources), "mismatched": len(bad), "errors": len(errors),
            "first_error": errors[:1]}


def nvjpeg_scale_probe() -> dict[str, Any]:
    """Is nvJPEG's reduced-size decode (nvjpegDecodeParamsSetScaleFactor) in the installed libnvjpeg? Only a
    probe: the scaled hardware decode itself is not wired in (docs/gpu.md, "Reduced-size hardware decode")."""
    import ctypes
    import glob
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    libs = sorted({p for r in roots for p in glob.glob(os.path.join(r, "**", "libnvjpeg.so*"), recursive=True)})
    out: dict[str, Any] = {"libraries": libs}
    for path in libs[:1] or ["libnvjpeg.so"]:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            out["error"] = str(exc)[:200]
            continue
        out["scale_factor_symbol"] = hasattr(lib, "nvjpegDecodeParamsSetScaleFactor")
    return out


def hazards(args: Any, photos: list[bytes], result: dict[str, Any], save: Any) -> None:
    h: dict[str, Any] = result.setdefault("hazards", {})
    seen = set()
    for lay in parse_layouts(args.layouts):
        key = (lay["decoders"], lay["max_batch"], lay["batch_single"])
        if key in seen:
            continue
        seen.add(key)
        name = f"d{key[0]}_b{key[1]}_single_{'on' if key[2] else 'off'}"
        h[name] = gpu_bench.guarded(hazard_resize, args.fake, photos, lay, max(2 * lay["max_batch"], 8), args.rounds)
        print(f"hazard {name}: {h[name]}", flush=True)
        save()
    if not args.fake:
        h["shared_decoder"] = gpu_bench.guarded(hazard_shared_decoder, photos)
        h["nvjpeg_scale_probe"] = gpu_bench.guarded(nvjpeg_scale_probe)
        save()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--layouts", default=DEFAULT_LAYOUTS, help="P:D:B:S,... (see the module's doc)")
    ap.add_argument("--images", type=int, default=96, help="jobs per CPU-worker measurement")
    ap.add_argument("--gpu-images", type=int, default=384, help="jobs per GPU case (all processes)")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="CPU worker processes (all cores)")
    ap.add_argument("--rounds", type=int, default=4, help="passes over the photos in each hazard check")
    ap.add_argument("--util-interval", type=float, default=0.1)
    ap.add_argument("--hazards-only", action="store_true")
    ap.add_argument("--sweep-only", action="store_true")
    ap.add_argument("--fake", action="store_true", help="no GPU: the numpy backend (checks the script only)")
    args = ap.parse_args()
    photos = [(gpu_bench.CORPUS / "photos" / p).read_bytes() for p in gpu_bench.PHOTOS]
    result: dict[str, Any] = {"layouts": args.layouts, "photos": gpu_bench.PHOTOS, "cpu_cores": os.cpu_count(),
                              "fake": args.fake, "loadavg": Path("/proc/loadavg").read_text().strip()}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))

    os.environ["VIPS_CONCURRENCY"] = "1"  # read by libvips when each spawned child starts
    if not args.sweep_only:
        hazards(args, photos, result, save)
    if not args.hazards_only:
        sweep(args, photos, result, save)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
