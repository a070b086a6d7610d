"""GpuBackend: decode on the CPU (shrink-on-load) or the GPU (nvImageCodec), resize on the GPU, encode on
the GPU (JPEG, nvImageCodec) or the CPU -- with jobs from the worker's threads gathered into micro-batches.

Each ``resize()`` call does its own CPU stages (header check, CPU decode, CPU encode) on the caller's
thread, so the worker's job threads keep the CPU cores busy, and only the GPU stage goes through the
MicroBatcher.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyvips

from imgworker.arrays import device_io
from imgworker.backends.base import Rendered
from imgworker.backends.gpu import codec, decode, detect
from imgworker.backends.gpu.batcher import MicroBatcher, run_shrinking
from imgworker.backends.gpu.decode import GpuDecodeRefused, frame_refusal, gpu_refusal
from imgworker.backends.gpu.encode import GPU_ENCODE, Encoded, JpegEncoder
from imgworker.backends.gpu.engine import CupyEngine, NumpyEngine, Prepared, Result
from imgworker.core.config import ConfigError
from imgworker.core.contract import ResizeSpec
from imgworker.core.cpus import available_cpus
from imgworker.core.deadline import Deadline
from imgworker.core.errors import ImgworkerError, InternalError, Unavailable
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits
from imgworker.imaging.load import FAIL_ON, shrink_on_load
from imgworker.imaging.probe import probe

Item = tuple[bytes, ResizeSpec, Limits]
_nullcontext = contextlib.nullcontext
GPU_DECODE = ("auto", "always", "never")


class GpuBackend:
    """``GpuBackend()`` needs a CUDA device (raises detect.GpuUnavailable otherwise);
    ``GpuBackend(xp=numpy)`` runs the identical pipeline on the CPU (tests, CI).

    max_batch / max_wait_ms: micro-batching of concurrent resize() calls (max_batch=1 disables it).
    memory_fraction: cap of CuPy's device memory pool, as a fraction of the card.
    gpu_decode: which JPEGs nvImageCodec decodes in the GPU batches; only those decode.gpu_refusal accepts
    (baseline/extended sequential, 8-bit sRGB, no ICC, clean scan), the others go to libvips on the job's
    thread. "auto": all of them when the GPU has hardware JPEG engines (detect.hardware_jpeg), else only
    those whose shrink-on-load would be 1 or 2; "always": all of them; "never": none.
    gpu_encode: JPEG outputs (3-band) encoded by nvImageCodec on the GPU with the CPU backend's settings
    (quality, optimized Huffman, 4:2:0 below Q 90) instead of libvips. "auto": when its JPEG encoder works
    here; "always": the same, but a missing encoder is a ConfigError at start; "never": libvips.
    oom_fallback: "cpu" (an image that cannot fit even alone is resized by the numpy path) or "retry"
    (it fails with a retryable UNAVAILABLE error).
    jpeg_decoder / jpeg_encoder: the device JPEG codecs pipeline jobs use (engine/device_io.py); default the
    CuPy engine's nvImageCodec BatchDecoder and JpegEncoder. Any object with their interface may be given
    (``decode(list[bytes]) -> (list[array | None], ms)``, ``encode(images, qualities) -> (list[bytes | None],
    ms)``), e.g. a CPU JPEG codec on NumPy to exercise the routing without a GPU; gpu_decode / gpu_encode
    still decide which files and outputs take them. Plain resize jobs use the engine's own codecs (the NumPy
    engine has none: a JPEG routed to it comes back refused and libvips decodes it, as in the tests).
    """

    name = "gpu"
    executor = "array"  # pipelines run every step's array implementation on ``xp`` (imgworker/engine)

    def __init__(
        self,
        xp: Any = None,
        *,
        kernel: str = "lanczos3",
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        memory_fraction: float = 0.5,
        gpu_decode: str = "auto",
        gpu_encode: str = "auto",
        oom_fallback: str = "cpu",
        fail_on: str = "warning",
        cpu_threads: int | None = None,
        profile: bool = False,
        name: str | None = None,
        decoders: int = 1,
        batch_single: bool = False,
        jpeg_decoder: Any = None,
        jpeg_encoder: Any = None,
    ) -> None:
        if gpu_decode not in GPU_DECODE:
            raise ValueError(f"gpu_decode must be one of {', '.join(GPU_DECODE)}, got {gpu_decode!r}")
        if gpu_encode not in GPU_ENCODE:
            raise ValueError(f"gpu_encode must be one of {', '.join(GPU_ENCODE)}, got {gpu_encode!r}")
        if oom_fallback not in ("cpu", "retry"):
            raise ValueError(f"oom_fallback must be 'cpu' or 'retry', got {oom_fallback!r}")
        if fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")
        if decoders < 1:
            raise ValueError(f"decoders must be >= 1, got {decoders}")
        self.fail_on = fail_on
        self.oom_fallback = oom_fallback
        # Decoder layout (docs/gpu.md): used by the CuPy engine's BatchDecoder; recorded on NumPy (no decoder).
        self.decoder_layout = decode.DecoderLayout(decoders, batch_single)
        self.cpu_engine = NumpyEngine(kernel)
        self.engine: NumpyEngine | CupyEngine
        threads = cpu_threads or available_cpus()  # the pod's CPUs, not the node's
        if xp is None or getattr(xp, "__name__", "") == "cupy":
            cp = xp if xp is not None else detect.require_gpu()
            wanted = gpu_decode != "never" or gpu_encode != "never"
            codecs = detect.nvimgcodec() if wanted else None
            encoder = JpegEncoder(cp, codecs) if codecs is not None and gpu_encode != "never" else None
            decoder_mod = codecs if gpu_decode != "never" else None
            encoder = encoder if encoder is not None and encoder.works() else None
            self.engine = CupyEngine(cp, kernel, max_batch, memory_fraction, decoder_mod, profile, threads, encoder,
                                     layout=self.decoder_layout)
        elif xp is np:
            self.engine = self.cpu_engine
        else:
            raise ValueError(f"xp must be numpy or cupy, got {xp!r}")
        self._jpeg_decoder = jpeg_decoder if jpeg_decoder is not None else getattr(self.engine, "decoder", None)
        self._jpeg_encoder = jpeg_encoder if jpeg_encoder is not None else getattr(self.engine, "encoder", None)
        self.gpu_decode = gpu_decode if self._jpeg_decoder is not None else "never"
        self.hardware_jpeg = self.gpu_decode != "never" and detect.hardware_jpeg()
        self.gpu_encode = gpu_encode if self._jpeg_encoder is not None else "never"
        if gpu_encode == "always" and self.gpu_encode == "never":
            raise ConfigError(
                "gpu_encode='always': nvImageCodec's GPU JPEG encoder is not usable here (install "
                "nvidia-nvimgcodec-cu12 or -cu13 with nvJPEG, on a CUDA device); use gpu_encode='auto' or 'never'"
            )
        self.device = self.engine.name
        if name is not None:
            self.name = name  # "numpy": --backend numpy, this backend on NumPy as a slow reference
        self.batcher: MicroBatcher[Prepared, Result] = MicroBatcher(
            self._run_gpu, max_batch=max_batch, max_wait_ms=max_wait_ms
        )
        # Pipeline jobs: each submits one closure (its steps on the array); a batch runs them back to back.
        self.array_batcher: MicroBatcher[Callable[[], Any], Any] = MicroBatcher(
            self._run_array_batch, max_batch=max_batch, max_wait_ms=max_wait_ms
        )
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="gpu-cpu")

    @property
    def xp(self) -> Any:
        """The array module pipelines run on: cupy, or numpy."""
        return self.engine.xp

    @property
    def kernels(self) -> Any:
        """The CuPy resize RawKernels (None on NumPy: resample.py's gathers)."""
        return getattr(self.engine, "kernels", None)

    @property
    def device_decoder(self) -> Any:
        """The JPEG decoder pipeline jobs' device decodes use (None: every pipeline job decodes on the CPU)."""
        return self._jpeg_decoder if self.gpu_decode != "never" else None

    @property
    def device_encoder(self) -> Any:
        """The JPEG encoder pipeline jobs' device encodes use (None: every encode on the CPU)."""
        return self._jpeg_encoder if self.gpu_encode != "never" else None

    def run_array(self, work: Callable[[], Any]) -> Any:
        """Run a pipeline job's array stage on the batch thread; its result or its exception. ``work`` may be
        a device_io.ArrayWork carrying a JPEG: the batch decodes those first, in one decoder call."""
        return self.array_batcher.submit(work)

    def _run_array_batch(self, works: Sequence[Callable[[], Any]]) -> list[Any]:
        streams = getattr(self.engine, "streams", None)
        lock = getattr(self.engine, "_lock", None)
        out: list[Any] = []
        with lock if lock is not None else _nullcontext():
            device_io.decode_batch(self.device_decoder, works)  # the batch's device JPEGs, one call
            for slot, work in enumerate(works):
                try:
                    if streams:
                        stream = streams[slot % len(streams)]
                        with stream:
                            out.append(work())
                    else:
                        out.append(work())
                except Exception as exc:
                    out.append(exc)
        return out

    def close(self) -> None:
        self.array_batcher.close()
        self.batcher.close()
        self._pool.shutdown(wait=False)

    # --- the three stages -------------------------------------------------------------------------------

    def prepare(self, source: bytes, spec: ResizeSpec, limits: Limits, deadline: Deadline | None = None) -> Prepared:
        """CPU stage: size limits and header check before any pixel is decoded, then decode (or not)."""
        t0 = time.perf_counter()
        info = probe(source, limits)  # raises UnsupportedImage / DecodeFailed / LimitExceeded
        geo = plan(info.width, info.height, spec.width, spec.height, spec.fit, limits)
        if info.loader == "jpeg":
            # The CPU backend's rule (decode at the smallest scale still >= the output), so both resample
            # the same decoded pixels.
            shrink = shrink_on_load(info.width, info.height, geo.resize_w, geo.resize_h)
        else:
            shrink = shrink_on_load(info.width, info.height, geo.resize_w, geo.resize_h, spare=2)  # WebP
        # quality: auto searches with libvips' encoder (finish), as a cpu worker does: the same choice.
        gpu_encode = spec.format == "jpeg" and self.gpu_encode != "never" and isinstance(spec.quality, int)
        item = Prepared(geo=geo, spec=spec, orientation=info.orientation, shrink=shrink, gpu_encode=gpu_encode,
                        deadline=deadline)
        route = self.gpu_decode_route(info.loader, shrink, source)
        if route is None:
            item.jpeg = source  # decoded in the batch, on the GPU; the timer below is the header check only
        else:
            if route != "off":
                item.timings["decode_routed_cpu"] = 1.0  # a JPEG the policy keeps off the GPU (progressive...)
            item.pixels = codec.decode(source, info.loader, shrink, self.fail_on)
        item.timings["decode"] = (time.perf_counter() - t0) * 1000
        return item

    def gpu_decode_route(self, loader: str, shrink: int, source: bytes) -> str | None:
        """None: decode on the GPU; "off": GPU decode not wanted here; else why the policy refused it.
        The one routing policy, for resize jobs and pipeline jobs (pipeline/array_run.py) alike."""
        if self.gpu_decode == "never" or loader != "jpeg":
            return "off"
        if self.gpu_decode == "auto" and not self.hardware_jpeg and shrink > 2:
            return "off"  # CUDA/hybrid nvJPEG decodes full size: slower than a 1/4 or 1/8 libvips decode
        # The SOF check first: it reads a few bytes, and keeps progressive files out of the batches (their
        # Huffman decode would run on the CPU inside the batch and stall every other image in it).
        frame = frame_refusal(source)
        if frame is not None:
            return frame

        return gpu_refusal(source, pyvips.Image.new_from_buffer(source, ""), self.fail_on)

    def _cpu_decode(self, item: Prepared) -> Prepared:
        """nvImageCodec refused the file: libvips decodes it (or raises DECODE_FAILED) under ``fail_on``."""
        t0 = time.perf_counter()
        assert item.jpeg is not None
        item.pixels = codec.decode(item.jpeg, "jpeg", item.shrink, self.fail_on)
        item.jpeg = None
        item.timings.pop("decode_gpu", None)
        item.timings["decode_gpu_refused"] = 1.0
        item.timings["decode"] = item.timings.get("decode", 0.0) + (time.perf_counter() - t0) * 1000
        return item

    def _run_gpu(self, items: Sequence[Prepared]) -> list[Result | BaseException]:
        """GPU stage for a batch: shrink the batch on OOM; an image that never fits takes the fallback."""
        t0 = time.perf_counter()
        for item in items:
            item.timings["batch_size"] = float(len(items))  # the engine lowers it if OOM splits the batch
        engine = self.engine
        out: list[Result | BaseException]
        if isinstance(engine, NumpyEngine):
            out = list(engine.run(items))
        else:
            shrinking: Callable[..., list[Result | BaseException]] = run_shrinking  # mypy cannot infer R
            out = shrinking(engine.run, items, engine.is_oom, engine.free, self._oom_fallback)
        ms = (time.perf_counter() - t0) * 1000
        for item in items:
            item.timings["gpu_batch"] = ms
        return out

    def _oom_fallback(self, item: Prepared, exc: BaseException) -> Result | BaseException:
        if self.oom_fallback == "retry":
            return Unavailable("GPU out of memory for this image; retry later or on a CPU worker")
        if item.pixels is None:
            return GpuDecodeRefused("GPU out of memory for its decode")  # the caller decodes it with libvips
        item.timings["oom_fallback"] = 1.0
        return self.cpu_engine.run_one(item)

    def finish(self, item: Prepared, pixels: Result) -> Rendered:
        """CPU stage: encode with the CPU backend's settings (unless the GPU encoded it already)."""
        spec = item.spec
        if isinstance(pixels, Encoded):
            return Rendered(pixels.data, pixels.width, pixels.height, spec.format, timings=item.timings)
        t0 = time.perf_counter()
        data, fields = codec.encode_array(pixels, spec.format, spec.quality, spec.background, item.deadline)
        item.timings["encode"] = (time.perf_counter() - t0) * 1000
        h, w = pixels.shape[:2]
        return Rendered(data=data, width=int(w), height=int(h), format=spec.format, timings=item.timings,
                        fields=fields)

    # --- Backend interface ------------------------------------------------------------------------------

    def resize(self, source: bytes, spec: ResizeSpec, limits: Limits, deadline: Deadline | None = None) -> Rendered:
        # The batch is not stopped mid-way: a job's deadline is kept by the worker's overrun guard (and by
        # quality: auto's probes, which check it).
        item = self.prepare(source, spec, limits, deadline)
        t0 = time.perf_counter()
        try:
            try:
                pixels = self.batcher.submit(item)
            except GpuDecodeRefused:  # on this job's thread, so a refused file never stalls the batch
                pixels = self.batcher.submit(self._cpu_decode(item))
        except ImgworkerError:
            raise
        except Exception as exc:
            raise InternalError(f"GPU resize failed: {type(exc).__name__}: {exc}") from exc
        item.timings["queue_and_gpu"] = (time.perf_counter() - t0) * 1000
        return self.finish(item, pixels)

    def _run_chunk(self, chunk: Sequence[Prepared]) -> list[Result | BaseException]:
        """One GPU batch; the JPEGs nvImageCodec refused are decoded by libvips and run again."""
        out = self._run_gpu(chunk)
        refused = [i for i, r in enumerate(out) if isinstance(r, GpuDecodeRefused)]
        redo: list[tuple[int, Prepared]] = []
        for i, fut in [(i, self._pool.submit(self._cpu_decode, chunk[i])) for i in refused]:
            try:
                redo.append((i, fut.result()))
            except Exception as exc:
                out[i] = exc
        if redo:
            for (i, _), res in zip(redo, self._run_gpu([p for _, p in redo]), strict=True):
                out[i] = res
        return out

    def resize_batch(self, items: Sequence[Item]) -> list[Rendered | Exception]:
        """Resize several jobs as one GPU batch (CPU stages in parallel threads); one result or error each."""
        prepared: list[Prepared | Exception] = []
        for fut in [self._pool.submit(self.prepare, *it) for it in items]:
            try:
                prepared.append(fut.result())
            except Exception as exc:
                prepared.append(exc)
        ready = [p for p in prepared if isinstance(p, Prepared)]
        results: list[Result | BaseException] = []
        for start in range(0, len(ready), self.batcher.max_batch):
            chunk = ready[start : start + self.batcher.max_batch]
            try:
                results.extend(self._run_chunk(chunk))
            except Exception as exc:
                results.extend([exc] * len(chunk))
        by_id = dict(zip((id(p) for p in ready), results, strict=True))
        futures: list[Exception | BaseException | Future[Rendered]] = []
        for p in prepared:
            if isinstance(p, Exception):
                futures.append(p)
                continue
            res = by_id[id(p)]
            futures.append(res if isinstance(res, BaseException) else self._pool.submit(self.finish, p, res))
        out: list[Rendered | Exception] = []
        for f in futures:
            if isinstance(f, Exception):
                out.append(f)
                continue
            if isinstance(f, BaseException):
                out.append(InternalError(repr(f)))
                continue
            try:
                out.append(f.result())
            except Exception as exc:
                out.append(exc)
        return out
