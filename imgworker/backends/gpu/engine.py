"""Where the pixels are resized: the same pipeline on numpy (tests, OOM fallback) or CuPy (the GPU).

``process`` is written once against ``xp``; an engine supplies the array module and its resize (the banded
RawKernels on CuPy, resample.py's gather code on numpy) and moves a batch of decoded images through it.
The CuPy engine decodes the batch's JPEGs in one nvImageCodec call (decode.py), then gives each image its
own CUDA stream and pinned host buffers, so one image's upload/download overlaps another's kernels; with a
JpegEncoder the 3-band JPEG outputs are encoded in one more call instead of being downloaded (encode.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from imgworker.arrays import resample
from imgworker.backends.gpu import decode, kernels
from imgworker.backends.gpu.encode import Encoded, JpegEncoder
from imgworker.core.contract import ResizeSpec
from imgworker.core.deadline import Deadline
from imgworker.core.geometry import Geometry

Resizer = Callable[[Any, int, int, Any], Any]  # (img, out_w, out_h, out_dtype) -> array
Result = npt.NDArray[np.uint8] | Encoded  # resized pixels (encoded on the CPU) or a GPU-encoded JPEG


@dataclass(slots=True)
class Prepared:
    """One job after its CPU stage: decoded pixels (or JPEG bytes for a GPU decode) and its geometry."""

    geo: Geometry
    spec: ResizeSpec
    pixels: npt.NDArray[np.uint8] | None = None
    jpeg: bytes | None = None  # set instead of pixels for a GPU decode
    orientation: int = 1  # EXIF orientation, applied on the GPU after a GPU decode
    shrink: int = 1  # shrink-on-load for a libvips decode (the fallback when the GPU refuses the JPEG)
    gpu_encode: bool = False  # a JPEG output the engine may encode on the GPU (3-band only)
    timings: dict[str, float] = field(default_factory=dict)
    deadline: Deadline | None = None  # the job's (quality: auto's probes stop at it)


def fill_for(channels: int, background: tuple[int, int, int]) -> tuple[int, ...]:
    """Padding colour per channel: background, opaque alpha (as the CPU backend's embed)."""
    colour = background if channels >= 3 else (background[0],)
    return tuple(colour) + ((255,) if channels in (2, 4) else ())


def process(xp: Any, resize: Resizer, img: Any, geo: Geometry, spec: ResizeSpec) -> Any:
    """Resize (premultiplied when there is alpha, like libvips), then crop (cover) or pad (contain)."""
    channels = int(img.shape[2])
    if channels in (2, 4):
        x = resample.premultiply(xp, img)
        x = resize(x, geo.resize_w, geo.resize_h, xp.float32)
        x = resample.to_uint8(xp, resample.unpremultiply(xp, x))
    else:
        x = resize(img, geo.resize_w, geo.resize_h, xp.uint8)
    if geo.crops:
        x = resample.crop(x, geo.crop_left, geo.crop_top, geo.final_w, geo.final_h)
    elif geo.pads:
        fill = fill_for(channels, spec.background)
        x = resample.pad(xp, x, geo.final_w, geo.final_h, geo.pad_left, geo.pad_top, fill)
    return x


class NumpyEngine:
    """The reference path: numpy arrays, resample.py's banded gathers."""

    name = "numpy"
    xp: Any = np

    def __init__(self, kernel: str = "lanczos3") -> None:
        self.kernel = kernel

    def _resize(self, img: Any, out_w: int, out_h: int, dtype: Any) -> Any:
        x = resample.resize(np, img, out_w, out_h, self.kernel)
        return resample.to_uint8(np, x) if np.dtype(dtype) == np.uint8 else x

    def run_one(self, item: Prepared) -> npt.NDArray[np.uint8]:
        if item.pixels is None:  # no GPU decoder here: the backend decodes it with libvips and runs it again
            raise decode.GpuDecodeRefused("the numpy engine needs pixels decoded on the CPU")
        t0 = time.perf_counter()
        out = np.ascontiguousarray(process(np, self._resize, item.pixels, item.geo, item.spec))
        item.timings["resize"] = (time.perf_counter() - t0) * 1000
        return out

    def run(self, items: Sequence[Prepared]) -> list[npt.NDArray[np.uint8] | BaseException]:
        out: list[npt.NDArray[np.uint8] | BaseException] = []
        for item in items:
            try:
                out.append(self.run_one(item))
            except Exception as exc:
                out.append(exc)
        return out


class CupyEngine:
    """The GPU path: banded RawKernels, one stream and pinned host buffers per batch slot."""

    name = "cupy"

    def __init__(
        self,
        cp: Any,
        kernel: str = "lanczos3",
        max_batch: int = 8,
        memory_fraction: float = 0.5,
        nvimgcodec: Any = None,
        profile: bool = False,
        cpu_threads: int = 0,
        encoder: JpegEncoder | None = None,
        layout: decode.DecoderLayout | None = None,
    ) -> None:
        self.cp = self.xp = cp
        self.kernel = kernel
        self.kernels = kernels
        self.profile = profile  # synchronise after each stage to time it (benchmarks only)
        self.pool = cp.get_default_memory_pool()
        self.pool.set_limit(fraction=memory_fraction)  # bounded: OOM is raised, not the whole card taken
        self.streams = [cp.cuda.Stream(non_blocking=True) for _ in range(max_batch)]
        self._pinned: dict[tuple[int, str], npt.NDArray[np.uint8]] = {}
        self._lock = threading.Lock()  # pinned buffers and streams belong to one batch at a time
        self.decoder = decode.BatchDecoder(cp, nvimgcodec, cpu_threads, layout) if nvimgcodec is not None else None
        self.encoder = encoder
        kernels.module(cp)  # compile now, not in the first job

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, self.cp.cuda.memory.OutOfMemoryError):
            return True
        # Pinned host allocations and some library calls report it as a runtime error instead.
        return isinstance(exc, self.cp.cuda.runtime.CUDARuntimeError) and "MemoryAllocation" in str(exc)

    def free(self) -> None:
        self.pool.free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def _resize(self, img: Any, out_w: int, out_h: int, dtype: Any) -> Any:
        return self.kernels.resize(self.cp, img, out_w, out_h, self.kernel, dtype)

    def _pinned_view(self, slot: int, kind: str, shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
        """A pinned host buffer for this slot, grown on demand and reused across batches."""
        n = int(np.prod(shape))
        buf = self._pinned.get((slot, kind))
        if buf is None or buf.size < n:
            mem = self.cp.cuda.alloc_pinned_memory(max(n, 1 << 20))
            buf = np.frombuffer(mem, np.uint8, max(n, 1 << 20))
            self._pinned[(slot, kind)] = buf
        return buf[:n].reshape(shape)

    def _decode_on_gpu(self, items: Sequence[Prepared]) -> dict[int, Any]:
        """Decode every JPEG of the batch in one nvImageCodec call; slot -> device array (None: refused)."""
        todo = [i for i, it in enumerate(items) if it.pixels is None and it.jpeg is not None]
        if not todo:
            return {}
        if self.decoder is None:
            return dict.fromkeys(todo)
        try:
            arrays, ms = self.decoder.decode([items[i].jpeg for i in todo])  # type: ignore[misc]
        except Exception as exc:
            if self.is_oom(exc):
                raise
            return dict.fromkeys(todo)  # e.g. a library error: every caller decodes with libvips
        for i in todo:
            items[i].timings["decode_gpu"] = ms / len(todo)  # amortised share of the batched call
            items[i].timings["decode_gpu_batch"] = ms
        return dict(zip(todo, arrays, strict=True))

    def run(self, items: Sequence[Prepared]) -> list[Result | BaseException]:
        """Run a batch; raises OutOfMemoryError for the whole batch (the caller shrinks and retries)."""
        with self._lock:
            for item in items:
                item.timings["batch_size"] = float(len(items))
            on_device = self._decode_on_gpu(items)
            out: list[Result | BaseException] = []
            to_encode: dict[int, Any] = {}  # slot -> resized device image, encoded below instead of downloaded
            for slot, item in enumerate(items):
                if slot in on_device and on_device[slot] is None:
                    out.append(decode.GpuDecodeRefused("nvImageCodec could not decode this JPEG"))
                    continue
                stream = self.streams[slot % len(self.streams)]
                try:
                    with stream:
                        res = self._run_one(slot, item, stream, on_device.get(slot))
                except Exception as exc:
                    if self.is_oom(exc):
                        raise
                    out.append(exc)
                    continue
                if isinstance(res, np.ndarray):
                    out.append(res)
                else:
                    to_encode[slot] = res
                    out.append(Encoded(b"", 0, 0))  # placeholder, replaced by _encode
            for stream in self.streams:
                stream.synchronize()
            # Only now may the decoded images (owned by nvImageCodec) be released: the kernels are done.
            on_device.clear()
            # Copy out of the reused pinned buffers before the next batch overwrites them.
            out = [h.copy() if isinstance(h, np.ndarray) else h for h in out]
            if to_encode:
                self._encode(items, to_encode, out)
            return out

    def _encode(self, items: Sequence[Prepared], devs: dict[int, Any], out: list[Result | BaseException]) -> None:
        """Encode the batch's GPU-encode outputs in one call; one that fails is downloaded for libvips."""
        assert self.encoder is not None
        slots = list(devs)
        try:
            # gpu_encode items have a numeric quality (backend.prepare keeps quality: auto on the CPU)
            datas, ms = self.encoder.encode([devs[s] for s in slots], [cast(int, items[s].spec.quality) for s in slots])
        except Exception as exc:  # e.g. OOM in nvJPEG's own buffers: libvips encodes this batch instead
            if self.is_oom(exc):
                self.free()
            datas, ms = [None] * len(slots), 0.0
        for slot, data in zip(slots, datas, strict=True):
            item, dev = items[slot], devs[slot]
            item.timings["encode_gpu"] = ms / len(slots)  # amortised share of the batched call
            if data is None:
                item.timings["encode_gpu_failed"] = 1.0
                out[slot] = self.cp.asnumpy(dev)
            else:
                out[slot] = Encoded(data, int(dev.shape[1]), int(dev.shape[0]))

    def _mark(self, item: Prepared, stage: str, t0: float, stream: Any) -> float:
        if self.profile:
            stream.synchronize()
            t1 = time.perf_counter()
            item.timings[stage] = (t1 - t0) * 1000
            return t1
        return t0

    def _run_one(self, slot: int, item: Prepared, stream: Any, dev: Any) -> Any:
        """The host pixels (download queued on ``stream``), or the device image for a GPU encode."""
        cp = self.cp
        t = time.perf_counter()
        if dev is not None:
            # EXIF orientation of a GPU-decoded image: a device copy (~0.1 ms for 20 MP), contiguous for the kernels.
            dev = cp.ascontiguousarray(decode.orient(cp, dev, item.orientation))
            t = self._mark(item, "orient", t, stream)
        else:
            if item.pixels is None:
                raise ValueError("no pixels: neither a GPU nor a CPU decode was done")
            pinned = self._pinned_view(slot, "in", item.pixels.shape)
            np.copyto(pinned, item.pixels)
            dev = cp.empty(item.pixels.shape, dtype=cp.uint8)
            dev.set(pinned, stream=stream)
            t = self._mark(item, "upload", t, stream)
        out = cp.ascontiguousarray(process(cp, self._resize, dev, item.geo, item.spec))
        t = self._mark(item, "resize", t, stream)
        if item.gpu_encode and self.encoder is not None and out.ndim == 3 and out.shape[2] == 3:
            return out  # stays on the device: run() encodes the batch's JPEGs together
        host = self._pinned_view(slot, "out", tuple(int(s) for s in out.shape))
        out.get(stream=stream, out=host, blocking=False)  # run() synchronises every stream at the end
        self._mark(item, "download", t, stream)
        return host
