"""Device JPEG decode and encode for the array executor (pipeline jobs on a GPU worker), written against ``xp``.

A pipeline job whose source the GPU decode policy accepts (backends/gpu/decode.py: ``gpu_refusal``, asked
through ``GpuBackend.gpu_decode_route``) submits an ``ArrayWork`` that carries its JPEG (``DeviceJpeg``)
instead of CPU-decoded pixels; the backend's array batch decodes every such JPEG of the batch in ONE decoder
call (``decode_batch``: nvImageCodec's BatchDecoder, hardware engines first) before it runs the jobs' steps.
A JPEG the decoder refuses (None) is not retried in the batch: the job's ``take`` raises GpuDecodeRefused,
and the job's own thread decodes it with libvips and submits again, so one bad file never stalls a batch.

JPEG outputs the GPU encoder can honour (``jpeg_refusal``: 3-band uint8, still image, no mozjpeg, no
max_bytes, no metadata to embed) are encoded on the device from the device image (``encode``: one
JpegEncoder call for a job's JPEG outputs); every other encode is downloaded and encoded on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from imgworker.arrays.orientation import orient
from imgworker.core.quality import AutoQuality

__all__ = ["ArrayWork", "DeviceJpeg", "GpuDecodeRefused", "decode_batch", "encode", "jpeg_refusal",
           "reason_key", "sync"]

log = logging.getLogger("imgworker.arrays.device_io")
T = TypeVar("T")
XP = Any


class GpuDecodeRefused(Exception):
    """The device decoder could not decode this JPEG: the job decodes it with libvips instead."""


def reason_key(prefix: str, reason: str) -> str:
    """A timings key naming a routing reason: ("decode_routed_cpu", "icc profile") -> decode_routed_cpu_icc_profile."""
    slug = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")[:40]
    return f"{prefix}_{slug}" if slug else prefix


@dataclass
class DeviceJpeg:
    """A pipeline job's JPEG to decode on the device in its array batch; ``timings``: the job's."""

    data: bytes
    orientation: int = 1  # EXIF orientation applied on the device after the decode (1: none)
    timings: dict[str, float] = field(default_factory=dict)
    image: Any = None  # the decoded device array, set by decode_batch
    refused: str | None = None  # why it was not decoded (the job decodes it on the CPU)

    def take(self, xp: XP) -> Any:
        """The decoded, oriented (H, W, 3) uint8 image, contiguous; raises GpuDecodeRefused if there is none."""
        img, self.image = self.image, None
        if img is None:
            raise GpuDecodeRefused(self.refused or "not decoded in its batch")
        img = xp.asarray(img)
        if self.orientation != 1:
            img = orient(xp, img, self.orientation)
        return xp.ascontiguousarray(img)


class ArrayWork(Generic[T]):
    """What a pipeline job submits to the array batcher: its closure, and the JPEG to decode first (or None)."""

    def __init__(self, run: Callable[[], T], jpeg: DeviceJpeg | None = None) -> None:
        self.run, self.jpeg = run, jpeg

    def __call__(self) -> T:
        return self.run()


def decode_batch(decoder: Any, works: Sequence[Any]) -> int:
    """Decode the device JPEGs of a batch in one ``decoder.decode`` call; returns how many were asked.

    ``decoder``: BatchDecoder's interface, ``decode(list[bytes]) -> (list[array | None], ms)``; None or a
    failing call leaves every JPEG refused (their jobs decode on the CPU)."""
    todo = [w.jpeg for w in works if isinstance(w, ArrayWork) and w.jpeg is not None]
    if not todo:
        return 0
    if decoder is None:
        for j in todo:
            j.refused = "no device decoder"
        return len(todo)
    try:
        images, ms = decoder.decode([j.data for j in todo])
    except Exception as exc:  # a library error (or OOM): the CPU path decodes them all, nothing is lost
        log.debug("device decode of %d JPEGs failed: %s: %s", len(todo), type(exc).__name__, exc)
        for j in todo:
            j.refused = f"decoder failed: {type(exc).__name__}"
        return len(todo)
    for j, img in zip(todo, images, strict=True):
        j.timings["decode_gpu"] = ms / len(todo)  # amortised share of the batched call
        j.timings["decode_gpu_batch"] = ms
        j.timings["decode_gpu_batch_size"] = float(len(todo))
        if img is None:
            j.refused = "the device decoder refused this JPEG"
        else:
            j.image = img
    return len(todo)


def jpeg_refusal(o: Mapping[str, Any], img: Any, page_height: int | None, keep: tuple[str, ...],
                 encoder: Any) -> str | None:
    """Why this JPEG encode (the encode step's options ``o``) stays on the CPU, or None for the GPU encoder."""
    if o["mozjpeg"]:
        return "mozjpeg"  # trellis quantisation and scan optimisation: libvips (mozjpeg) only
    if o["max_bytes"]:
        return "max_bytes"  # the quality bisection re-encodes: libvips, with its exact byte counts
    if isinstance(o["quality"], AutoQuality):
        return "auto_quality"  # the search probes with libvips' encoder: the same choice as a cpu worker's
    if keep:
        return "metadata"  # the GPU encoder writes no EXIF/XMP/ICC
    if page_height is not None and page_height < int(img.shape[0]):
        return "animation"
    if img.ndim != 3 or int(img.shape[2]) != 3 or str(img.dtype) != "uint8":
        return "not 3-band uint8"  # grey, alpha (flattened by libvips' encode step), float
    if o["progressive"] and getattr(encoder, "progressive", True) is False:
        return "progressive"  # this nvImageCodec's JpegEncodeParams has no progressive mode
    return None


def sync(xp: XP) -> None:
    """Wait for the current CUDA stream (CuPy); nothing on NumPy."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.get_current_stream().synchronize()


def encode(encoder: Any, xp: XP, images: Sequence[Any], qualities: Sequence[int],
           progressive: Sequence[bool]) -> tuple[list[bytes | None], float, str | None]:
    """Encode device images in one ``encoder.encode`` call: (bytes or None each, ms, why it failed or None).

    ``progressive`` is passed only when an output asks for it (the keyword is new in JpegEncoder); an
    encoder that rejects it (TypeError / AttributeError) or fails in any way leaves every image to the CPU."""
    if not images:
        return [], 0.0, None
    t0 = time.perf_counter()
    ready = [xp.ascontiguousarray(i) for i in images]  # (a crop is a strided view) before the sync below
    sync(xp)  # JpegEncoder reads the images on its own stream: the kernels that wrote them must be done
    kwargs = {"progressive": list(progressive)} if any(progressive) else {}
    try:
        datas, _ = encoder.encode(ready, list(qualities), **kwargs)
    except (TypeError, AttributeError) as exc:
        if kwargs:  # remember it: later jobs route their progressive JPEGs to the CPU at once
            with contextlib.suppress(AttributeError):
                encoder.progressive = False
        return [None] * len(images), (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # e.g. OOM in nvJPEG's buffers: the CPU encodes them
        return [None] * len(images), (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}"
    return list(datas), (time.perf_counter() - t0) * 1000, None

