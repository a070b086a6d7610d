"""The GPU-decode policy and its CPU-testable parts: which JPEGs may go to nvImageCodec, EXIF orientation
applied like libvips' autorot, and the libvips fallback when the GPU refuses a file (no CUDA needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from support.corpus import bad, photo

from imgworker.backends.cpu import CpuBackend
from imgworker.backends.gpu import GpuBackend
from imgworker.backends.gpu.decode import frame_refusal, frame_type, gpu_refusal, orient, scan_is_clean
from imgworker.core.contract import ResizeSpec
from imgworker.core.errors import DecodeFailed
from imgworker.core.limits import Limits

LIMITS = Limits()


def read(path: Path) -> bytes:
    return path.read_bytes()


def refusal(source: bytes, fail_on: str = "warning") -> str | None:
    return gpu_refusal(source, pyvips.Image.new_from_buffer(source, ""), fail_on)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_libvips_autorot(orientation: int) -> None:
    arr = np.random.default_rng(orientation).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    image = pyvips.Image.new_from_array(arr, interpretation="srgb").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    expected = image.autorot().numpy()
    np.testing.assert_array_equal(orient(np, arr, orientation), expected)


@pytest.mark.parametrize("kind", ["baseline", "exif6"])
def test_baseline_photos_may_decode_on_the_gpu(kind: str) -> None:
    source = photo(kind).read_bytes()
    assert frame_type(source) == 0xC0 and frame_refusal(source) is None
    assert refusal(source) is None


def test_progressive_and_other_frames_stay_on_the_cpu() -> None:
    # Progressive files would be Huffman-decoded on the CPU inside the GPU batch (nvJPEG hybrid) and slow
    # the whole batch down: libvips decodes them on the job's thread instead.
    seeding = photo("progressive").read_bytes()
    assert frame_type(seeding) == 0xC2 and refusal(seeding) == "progressive"
    small = pyvips.Image.new_from_buffer(photo("baseline").read_bytes(), "", shrink=8)
    assert refusal(bytes(small.jpegsave_buffer(Q=80, interlace=True))) == "progressive"
    baseline = bytes(small.jpegsave_buffer(Q=80, restart_interval=2, optimize_coding=True))
    assert frame_type(baseline) == 0xC0 and refusal(baseline) is None
    sof = baseline.index(b"\xff\xc0")
    extended = baseline[: sof + 1] + b"\xc1" + baseline[sof + 2 :]  # SOF1: extended sequential Huffman
    assert frame_type(extended) == 0xC1 and refusal(extended) is None
    lossless = baseline[: sof + 1] + b"\xc3" + baseline[sof + 2 :]
    assert frame_refusal(lossless) == "lossless"
    arithmetic = baseline[: sof + 1] + b"\xc9" + baseline[sof + 2 :]
    assert frame_refusal(arithmetic) == "frame type SOF9"
    assert frame_refusal(b"\xff\xd8\xff\xda\x00\x02") == frame_refusal(b"GIF89a") == "no frame header"
    assert frame_type(baseline[:sof]) is None  # truncated inside the headers: no frame, no exception


def test_files_libvips_must_decode_are_refused() -> None:
    assert refusal(photo("cmyk").read_bytes()) == "icc profile"
    assert refusal(bad("truncated_dragonfly.jpg").read_bytes()) == "no EOI (truncated?)"
    corrupt = bad("corrupt_scan_dragonfly.jpg").read_bytes()
    assert refusal(corrupt, "warning") == refusal(corrupt, "error") == "invalid marker in scan"
    assert refusal(corrupt, "none") is None  # the lenient levels accept a damaged scan, like libvips
    small = pyvips.Image.new_from_buffer(photo("dragonfly").read_bytes(), "", shrink=8)
    grey = small.colourspace("b-w").jpegsave_buffer()
    assert refusal(grey) is not None and "b-w" in str(refusal(grey))
    tagged = small.icc_transform("srgb", embedded=False).jpegsave_buffer(keep="icc")
    assert refusal(tagged) == "icc profile"


def test_scan_check_allows_restart_markers_and_progressive_scans() -> None:
    small = pyvips.Image.new_from_buffer(photo("baseline").read_bytes(), "", shrink=8)
    for kw in ({"restart_interval": 4}, {"interlace": True}, {"interlace": True, "restart_interval": 2}):
        assert scan_is_clean(small.jpegsave_buffer(Q=90, **kw)), kw
    assert not scan_is_clean(b"\xff\xd8\xff\xda\x00\x02\x12\xff\x4d\x00\xff\xd9")
    assert not scan_is_clean(b"\xff\xd8 no scan at all")


def test_refused_jpeg_is_decoded_by_libvips_like_the_cpu_backend() -> None:
    # The numpy engine has no GPU decoder, so it refuses every JPEG routed to it: the same path as a file
    # nvImageCodec refuses on the GPU (libvips decodes it on the job's thread, then the batch runs again).
    gpu = GpuBackend(xp=np, max_batch=4, max_wait_ms=1)
    gpu.gpu_decode = "always"
    try:
        source = photo("exif6").read_bytes()
        spec = ResizeSpec(width=300, format="png")
        out = gpu.resize(source, spec, LIMITS)
        ref = CpuBackend().resize(source, spec, LIMITS)
        assert out.timings["decode_gpu_refused"] == 1.0 and "decode_gpu" not in out.timings
        assert (out.width, out.height) == (ref.width, ref.height) == (300, 225)
        a = pyvips.Image.new_from_buffer(out.data, "").numpy().astype(float)
        b = pyvips.Image.new_from_buffer(ref.data, "").numpy().astype(float)
        assert 10 * np.log10(255.0**2 / max(float(np.mean((a - b) ** 2)), 1e-9)) > 45
        corrupt = bad("corrupt_scan_dragonfly.jpg").read_bytes()
        batch = gpu.resize_batch([(source, spec, LIMITS), (corrupt, spec, LIMITS)])
        assert batch[0].width == 300 and batch[0].timings["decode_gpu_refused"] == 1.0  # type: ignore[union-attr]
        assert isinstance(batch[1], DecodeFailed)  # never routed to the GPU: libvips refuses it, as on CPU
    finally:
        gpu.close()


def test_progressive_jpeg_is_routed_to_libvips_before_the_batch() -> None:
    # Routed at the CPU stage (no GPU round trip), while a baseline file goes to the GPU decoder (here the
    # numpy engine, which refuses it: the same fallback as a file nvImageCodec cannot decode).
    gpu = GpuBackend(xp=np, max_batch=4, max_wait_ms=1)
    try:
        spec = ResizeSpec(width=256, format="png")
        for mode in ("always", "auto"):
            gpu.gpu_decode, gpu.hardware_jpeg = mode, True
            prog = gpu.resize(photo("progressive").read_bytes(), spec, LIMITS)
            assert prog.timings["decode_routed_cpu"] == 1.0 and "decode_gpu_refused" not in prog.timings
            base = gpu.resize(photo("baseline").read_bytes(), spec, LIMITS)
            assert base.timings["decode_gpu_refused"] == 1.0 and "decode_routed_cpu" not in base.timings
            assert (prog.width, base.width) == (256, 256)
    finally:
        gpu.close()


def test_auto_policy_needs_hardware_engines_for_small_outputs() -> None:
    # Without hardware engines, "auto" keeps the old rule: a JPEG that libvips can shrink on load by 4 or 8
    # (20 MP -> 256 px) is decoded by libvips; with them, every baseline JPEG goes to the GPU.
    gpu = GpuBackend(xp=np, max_batch=2, max_wait_ms=1)
    source = photo("baseline").read_bytes()
    try:
        gpu.gpu_decode = "auto"
        for hardware, expect_gpu in ((False, False), (True, True)):
            gpu.hardware_jpeg = hardware
            out = gpu.resize(source, ResizeSpec(width=256, format="png"), LIMITS)
            assert ("decode_gpu_refused" in out.timings) is expect_gpu, hardware
            assert "decode_routed_cpu" not in out.timings
        gpu.hardware_jpeg = False  # large outputs (shrink 1 or 2) go to the GPU decoder even without them
        assert "decode_gpu_refused" in gpu.resize(source, ResizeSpec(width=3000), LIMITS).timings
    finally:
        gpu.close()
