"""GPU JPEG decode with nvImageCodec: which files may take it, the batched call, EXIF orientation on the GPU.

Policy (docs/gpu.md, "GPU decode"): only sequential Huffman JPEGs (SOF0 baseline / SOF1 extended, which
the hardware JPEG engines decode; progressive files are decoded faster by libvips' shrink-on-load on the
job's own thread than by nvJPEG's hybrid CPU Huffman, and slow down a whole batch), and only files that
libvips would decode to the same pixels and that nvJPEG can judge as well as libjpeg go to the GPU --
8-bit 3-band YCbCr/RGB JPEGs without an ICC profile
(CMYK, grey, 12-bit and ICC-tagged files need libvips' colour path), whose stream ends with EOI (a
truncated file is libvips' call under ``fail_on``) and, for the strict ``fail_on`` levels, whose
entropy-coded data has no invalid marker (a cheap check that catches most corrupt scans). A file that
nvImageCodec still refuses is decoded by libvips on the caller's thread (``GpuDecodeRefused``), so
libvips has the last word: it decodes it or raises DECODE_FAILED, exactly as the CPU backend would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgworker.arrays.device_io import GpuDecodeRefused  # one exception for resize and pipeline jobs
from imgworker.arrays.orientation import orient
from imgworker.backends.gpu import detect

__all__ = [
    "BatchDecoder", "DecoderLayout", "GpuDecodeRefused", "frame_refusal", "frame_type", "gpu_refusal", "orient",
    "scan_is_clean", "split",
]

# Bytes that may follow 0xFF after the first SOS: stuffing, RSTn, EOI, and the DHT/SOS/DRI segments between
# progressive scans (and 0xFF fill bytes). Anything else is a corrupt scan that libjpeg would warn about.
_SCAN_OK = np.zeros(256, dtype=bool)
_SCAN_OK[[0x00, 0xC4, 0xD9, 0xDA, 0xDD, 0xFF]] = True
_SCAN_OK[0xD0:0xD8] = True
STRICT_FAIL_ON = ("error", "warning")
SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)  # SOF0 baseline, SOF1 extended sequential: the hardware engines' share
_NOT_SOF = (0xC4, 0xC8, 0xCC)  # DHT, JPG (reserved), DAC share the 0xC0-0xCF range with the SOFn markers
_FRAME_NAMES = {0xC2: "progressive", 0xC3: "lossless"}


def scan_is_clean(source: bytes) -> bool:
    """True if every 0xFF in the entropy-coded data is followed by a byte a valid JPEG allows there."""
    sos = source.find(b"\xff\xda")
    if sos < 0 or sos + 4 > len(source):
        return False
    start = sos + 2 + int.from_bytes(source[sos + 2 : sos + 4], "big")  # skip the SOS header itself
    data = np.frombuffer(source, dtype=np.uint8, offset=min(start, len(source)))
    at = np.flatnonzero(data[:-1] == 0xFF)
    return bool(_SCAN_OK[data[at + 1]].all())


def frame_type(source: bytes) -> int | None:
    """The JPEG's SOFn marker (0xC0 baseline ... 0xC2 progressive ...), read by walking the marker segments
    before the first scan (a few steps, microseconds); None if there is no frame header before it."""
    if source[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(source)
    while pos + 4 <= end:
        if source[pos] != 0xFF:
            return None
        marker = source[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers: no length
            pos += 2
        elif marker in (0xD9, 0xDA):  # EOI or a scan before any frame header
            return None
        elif 0xC0 <= marker <= 0xCF and marker not in _NOT_SOF:
            return marker
        else:
            pos += 2 + int.from_bytes(source[pos + 2 : pos + 4], "big")
    return None


def frame_refusal(source: bytes) -> str | None:
    """The cheap, bytes-only half of the policy: None for a baseline/extended sequential Huffman JPEG."""
    sof = frame_type(source)
    if sof in SEQUENTIAL_HUFFMAN:
        return None
    return "no frame header" if sof is None else _FRAME_NAMES.get(sof, f"frame type SOF{sof - 0xC0}")


def gpu_refusal(source: bytes, head: Any, fail_on: str) -> str | None:
    """Why this JPEG must not be decoded on the GPU (``head``: its libvips header), or None if it may."""
    frame = frame_refusal(source)
    if frame is not None:
        return frame
    if head.get_typeof("icc-profile-data") != 0:
        return "icc profile"
    if head.interpretation != "srgb" or head.bands != 3 or head.format != "uchar":
        return f"{head.interpretation}/{head.bands} bands/{head.format}"
    if not source[-1024:].rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "no EOI (truncated?)"
    if fail_on in STRICT_FAIL_ON and not scan_is_clean(source):
        return "invalid marker in scan"
    return None


@dataclass(frozen=True)
class DecoderLayout:
    """How a process drives the JPEG engines (docs/gpu.md, "Decoder layout options"): ``decoders``
    nvImageCodec Decoders, each on its own thread and CUDA stream, a batch split between them; with
    ``batch_single`` nvJPEG's hardware decoder takes one image per call (``force_batch_single``), which
    nvImageCodec otherwise does only for mixed-chroma batches of 13+."""

    decoders: int = 1
    batch_single: bool = False

    def options(self) -> str:
        """The Decoder's ``options`` string ("" for nvImageCodec's defaults)."""
        return "nvjpeg_hw_decoder:force_batch_single=1" if self.batch_single else ""


def split(n: int, parts: int) -> list[range]:
    """Contiguous, near-equal index ranges of ``n`` items over at most ``parts`` Decoders (none empty)."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        size = base + (1 if p < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


class BatchDecoder:
    """nvImageCodec Decoders (hardware JPEG engines first); decodes a whole batch per call, split across
    ``layout.decoders`` Decoders on their own threads and streams (one Decoder: one call, no thread).

    The decoded images stay on the device: nvImageCodec's Images are wrapped by CuPy through
    __cuda_array_interface__ (no copy). The caller must keep the returned arrays alive until the kernels
    that read them have finished (their memory belongs to the nvImageCodec Image).
    """

    def __init__(self, cp: Any, mod: Any, cpu_threads: int = 0, layout: DecoderLayout | None = None) -> None:
        self.cp, self.mod = cp, mod
        self.layout = layout or DecoderLayout()
        n = self.layout.decoders
        self.decoders = [detect.gpu_decoder(mod, cpu_threads, self.layout.options()) for _ in range(n)]
        self.decoder = self.decoders[0]
        # Orientation is applied by us on the GPU (orient), so the header's orientation is the only truth.
        self.params = mod.DecodeParams(apply_exif_orientation=False, color_spec=mod.ColorSpec.SRGB)
        self.streams = [cp.cuda.Stream(non_blocking=True) for _ in range(n)]
        self.stream = self.streams[0]
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="gpu-decode") if n > 1 else None

    def _decode_part(self, k: int, jpegs: Sequence[bytes]) -> list[Any]:
        streams = [self.mod.CodeStream(b) for b in jpegs]
        images = self.decoders[k].decode(streams, params=self.params, cuda_stream=self.streams[k].ptr)
        self.streams[k].synchronize()  # on this Decoder's own thread: the others keep decoding meanwhile
        return list(images)

    def decode(self, jpegs: Sequence[bytes]) -> tuple[list[Any | None], float]:
        """Decode all of ``jpegs``: (CuPy arrays or None where refused, wall ms incl. sync)."""
        t0 = time.perf_counter()
        if self._pool is None or len(jpegs) < 2:
            images = self._decode_part(0, jpegs)
        else:
            parts = split(len(jpegs), len(self.decoders))
            futures = [self._pool.submit(self._decode_part, k, [jpegs[i] for i in r]) for k, r in enumerate(parts)]
            images = [img for f in futures for img in f.result()]
        ms = (time.perf_counter() - t0) * 1000
        return [None if img is None else self.cp.asarray(img) for img in images], ms
