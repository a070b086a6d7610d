"""The GPU-decode policy and its CPU-testable parts: which JPEGs may go to nvImageCodec, EXIF orientation
applied like libvips' autorot, and the libvips fallback when the GPU refuses a file (no CUDA needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pyvips

from imgworker.backends.cpu import CpuBackend
from imgworker.backends.gpu import GpuBackend
from imgworker.backends.gpu.decode import gpu_refusal, orient, scan_is_clean
from imgworker.contract import ResizeSpec
from imgworker.errors import DecodeFailed
from imgworker.limits import Limits

CORPUS = Path(os.environ.get("IMGWORKER_CORPUS") or Path(__file__).parents[2] / "shared/corpus")
LIMITS = Limits()


def read(rel: str) -> bytes:
    return (CORPUS / rel).read_bytes()


def refusal(source: bytes, fail_on: str = "warning") -> str | None:
    return gpu_refusal(source, pyvips.Image.new_from_buffer(source, ""), fail_on)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_libvips_autorot(orientation: int) -> None:
    arr = np.random.default_rng(orientation).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    image = pyvips.Image.new_from_array(arr, interpretation="srgb").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    expected = image.autorot().numpy()
    np.testing.assert_array_equal(orient(np, arr, orientation), expected)


@pytest.mark.parametrize(
    "name",
    ["kleiber_6028x3391_baseline.jpg", "seeding_5312x2988_progressive.jpg", "dragonfly_exif_orientation6.jpg"],
)
def test_plain_photos_may_decode_on_the_gpu(name: str) -> None:
    assert refusal(read(f"photos/{name}")) is None


def test_files_libvips_must_decode_are_refused() -> None:
    assert refusal(read("photos/bridge_4352x2448_cmyk.jpg")) == "icc profile"
    assert refusal(read("bad/truncated_dragonfly.jpg")) == "no EOI (truncated?)"
    corrupt = read("bad/corrupt_scan_dragonfly.jpg")
    assert refusal(corrupt, "warning") == refusal(corrupt, "error") == "invalid marker in scan"
    assert refusal(corrupt, "none") is None  # the lenient levels accept a damaged scan, like libvips
    photo = pyvips.Image.new_from_buffer(read("photos/dragonfly_4224x3168_baseline.jpg"), "", shrink=8)
    grey = photo.colourspace("b-w").jpegsave_buffer()
    assert refusal(grey) is not None and "b-w" in str(refusal(grey))
    tagged = photo.icc_transform("srgb", embedded=False).jpegsave_buffer(keep="icc")
    assert refusal(tagged) == "icc profile"


def test_scan_check_allows_restart_markers_and_progressive_scans() -> None:
    photo = pyvips.Image.new_from_buffer(read("photos/kleiber_6028x3391_baseline.jpg"), "", shrink=8)
    for kw in ({"restart_interval": 4}, {"interlace": True}, {"interlace": True, "restart_interval": 2}):
        assert scan_is_clean(photo.jpegsave_buffer(Q=90, **kw)), kw
    assert not scan_is_clean(b"\xff\xd8\xff\xda\x00\x02\x12\xff\x4d\x00\xff\xd9")
    assert not scan_is_clean(b"\xff\xd8 no scan at all")


def test_refused_jpeg_is_decoded_by_libvips_like_the_cpu_backend() -> None:
    # The numpy engine has no GPU decoder, so it refuses every JPEG routed to it: the same path as a file
    # nvImageCodec refuses on the GPU (libvips decodes it on the job's thread, then the batch runs again).
    gpu = GpuBackend(xp=np, max_batch=4, max_wait_ms=1)
    gpu.gpu_decode = "always"
    try:
        source = read("photos/dragonfly_exif_orientation6.jpg")
        spec = ResizeSpec(width=300, format="png")
        out = gpu.resize(source, spec, LIMITS)
        ref = CpuBackend().resize(source, spec, LIMITS)
        assert out.timings["decode_gpu_refused"] == 1.0 and "decode_gpu" not in out.timings
        assert (out.width, out.height) == (ref.width, ref.height) == (300, 225)
        a = pyvips.Image.new_from_buffer(out.data, "").numpy().astype(float)
        b = pyvips.Image.new_from_buffer(ref.data, "").numpy().astype(float)
        assert 10 * np.log10(255.0**2 / max(float(np.mean((a - b) ** 2)), 1e-9)) > 45
        batch = gpu.resize_batch([(source, spec, LIMITS), (read("bad/corrupt_scan_dragonfly.jpg"), spec, LIMITS)])
        assert batch[0].width == 300 and batch[0].timings["decode_gpu_refused"] == 1.0  # type: ignore[union-attr]
        assert isinstance(batch[1], DecodeFailed)  # never routed to the GPU: libvips refuses it, as on CPU
    finally:
        gpu.close()
