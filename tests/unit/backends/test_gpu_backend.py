"""GpuBackend's whole pipeline run with xp=numpy against CpuBackend: same sizes, near-identical pixels."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import pyvips
from support.corpus import BAD, PHOTOS, photo
from support.tools import require_module

from imgworker.backends.base import Backend, Rendered
from imgworker.backends.cpu import CpuBackend
from imgworker.backends.gpu import GpuBackend
from imgworker.core.config import ConfigError
from imgworker.core.contract import FITS, ResizeSpec
from imgworker.core.errors import DecodeFailed, LimitExceeded, UnsupportedImage
from imgworker.core.limits import Limits

LIMITS = Limits()

# PSNR of GpuBackend(xp=numpy) vs CpuBackend, PNG output (lossless, so only the resize differs), 512 px
# wide. Measured with libvips 8.18: JPEG/PNG photos 55.1-56.0 dB; CMYK 50.1 dB (the CPU backend resamples
# CMYK and converts after, we convert first); the WebP 44.8 dB (libvips decodes WebP
# with libwebp's own scaler when shrinking on load, we decode at 1/N and Lanczos the rest); RGBA compared
# premultiplied (colour under alpha=0 is undefined) 51.6 dB, alpha 58.8 dB. Bounds are ~5 dB under the
# worst measured value: a half-pixel shift or missing antialiasing falls to 30-35 dB.
PSNR_DB = {
    photo("rgb16").name: 50.0,
    photo("cmyk").name: 45.0,
    photo("dragonfly").name: 50.0,
    photo("png_named_jpg").name: 50.0,
    photo("exif6").name: 50.0,
    photo("baseline").name: 49.0,
    photo("progressive").name: 50.0,
    photo("webp").name: 40.0,
    photo("rgba").name: 46.0,
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def pixels(r: Rendered) -> np.ndarray:
    img = pyvips.Image.new_from_buffer(r.data, "")
    assert (img.width, img.height) == (r.width, r.height)
    arr: np.ndarray = img.numpy()
    return arr if arr.ndim == 3 else arr[..., None]


@pytest.fixture(scope="module")
def gpu() -> Iterator[GpuBackend]:
    backend = GpuBackend(xp=np, max_batch=4, max_wait_ms=2)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def cpu() -> CpuBackend:
    return CpuBackend()


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    img = pyvips.Image.thumbnail(str(photo("dragonfly")), 528)  # 528x396, as the full-size photo at 1/8
    return bytes(img.crop(0, 0, 397, 263).jpegsave_buffer(Q=95))


def test_is_a_backend(gpu: GpuBackend) -> None:
    assert isinstance(gpu, Backend)
    assert gpu.name == "gpu" and gpu.device == "numpy"


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize(("width", "height"), [(100, 100), (150, 40), (31, 200), (50, None), (None, 77), (800, 600)])
def test_same_dimensions_as_cpu_for_every_fit(
    gpu: GpuBackend, cpu: CpuBackend, small_jpeg: bytes, fit: str, width: int | None, height: int | None
) -> None:
    spec = ResizeSpec(width=width, height=height, fit=fit, format="png", background=(10, 200, 30))
    ours, theirs = gpu.resize(small_jpeg, spec, LIMITS), cpu.resize(small_jpeg, spec, LIMITS)
    assert (ours.width, ours.height) == (theirs.width, theirs.height)
    a, b = pixels(ours), pixels(theirs)
    # Small images upscaled/cropped/padded: allow a little more than photos (edges weigh more here).
    assert psnr(a, b) > 40.0, (fit, width, height)
    if fit == "contain" and width and height and (ours.width, ours.height) != (397, 263):
        corner = a[0, 0] if a[0, 0, 1] == 200 else a[-1, -1]
        assert tuple(corner[:3]) == (10, 200, 30)  # padded with the background


@pytest.mark.parametrize("name", sorted(PSNR_DB))
def test_corpus_photo_psnr_vs_cpu_backend(gpu: GpuBackend, cpu: CpuBackend, name: str) -> None:
    source = (PHOTOS / name).read_bytes()
    spec = ResizeSpec(width=512, format="png")
    ours, theirs = gpu.resize(source, spec, LIMITS), cpu.resize(source, spec, LIMITS)
    assert (ours.width, ours.height) == (theirs.width, theirs.height)
    a, b = pixels(ours).astype(np.float64), pixels(theirs).astype(np.float64)
    assert a.shape == b.shape
    if a.shape[2] == 4:
        alpha_db = psnr(a[..., 3], b[..., 3])
        value = psnr(a[..., :3] * a[..., 3:] / 255, b[..., :3] * b[..., 3:] / 255)
        assert alpha_db > 50.0
    else:
        value = psnr(a, b)
    print(f"{name}: {value:.1f} dB vs CpuBackend")
    assert value > PSNR_DB[name]


def test_jpeg_output_and_timings(gpu: GpuBackend, small_jpeg: bytes) -> None:
    r = gpu.resize(small_jpeg, ResizeSpec(width=120, format="jpeg", quality=80), LIMITS)
    assert r.data[:2] == b"\xff\xd8" and r.format == "jpeg"
    assert {"decode", "resize", "encode", "gpu_batch"} <= set(r.timings)


def test_gpu_encode_option_is_checked_and_numpy_encodes_with_libvips(small_jpeg: bytes) -> None:
    with pytest.raises(ValueError, match="gpu_encode must be one of auto, always, never"):
        GpuBackend(xp=np, gpu_encode="on")
    # "always" promises the GPU encoder: without one (numpy here) the worker must not start.
    with pytest.raises(ConfigError, match="nvimgcodec"):
        GpuBackend(xp=np, gpu_encode="always")
    backend = GpuBackend(xp=np, gpu_encode="auto", max_batch=1)
    try:
        assert backend.gpu_encode == "never"  # no encoder on the numpy engine: libvips encodes
        r = backend.resize(small_jpeg, ResizeSpec(width=120, quality=80), LIMITS)
    finally:
        backend.close()
    assert r.data[:2] == b"\xff\xd8" and "encode" in r.timings and "encode_gpu" not in r.timings


def test_rgba_to_jpeg_is_flattened_onto_background(gpu: GpuBackend) -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 255  # fully transparent red
    src = bytes(pyvips.Image.new_from_array(rgba).copy(interpretation="srgb").pngsave_buffer())
    r = gpu.resize(src, ResizeSpec(width=30, format="jpeg", background=(0, 0, 255)), LIMITS)
    px = pixels(r)
    assert px.shape == (20, 30, 3)
    assert px[..., 2].mean() > 240 and px[..., 0].mean() < 15


def test_bad_inputs_raise_the_shared_errors(gpu: GpuBackend) -> None:
    spec = ResizeSpec(width=100)
    with pytest.raises(UnsupportedImage):
        gpu.resize(b"", spec, LIMITS)
    with pytest.raises(UnsupportedImage):
        gpu.resize(b"this is text, not an image", spec, LIMITS)
    bad = BAD
    if bad.is_dir():  # not carried to the GPU machine
        with pytest.raises(LimitExceeded):
            gpu.resize((bad / "bomb_100000x100000_1bit.png").read_bytes(), spec, LIMITS)
        with pytest.raises(DecodeFailed):
            gpu.resize((bad / "truncated_dragonfly.jpg").read_bytes(), spec, LIMITS)
    with pytest.raises(LimitExceeded):
        gpu.resize(
            photo("dragonfly").read_bytes(), spec, Limits(max_source_pixels=10**6)
        )


def test_resize_batch_returns_one_result_or_error_per_item(gpu: GpuBackend, small_jpeg: bytes) -> None:
    items = [
        (small_jpeg, ResizeSpec(width=64, format="png"), LIMITS),
        (b"nope", ResizeSpec(width=64), LIMITS),
        (small_jpeg, ResizeSpec(width=50, height=50, fit="cover", format="webp"), LIMITS),
    ]
    out = gpu.resize_batch(items)
    assert len(out) == 3
    assert isinstance(out[0], Rendered) and (out[0].width, out[0].height) == (64, 42)
    assert isinstance(out[1], UnsupportedImage)
    assert isinstance(out[2], Rendered) and (out[2].width, out[2].height) == (50, 50) and out[2].format == "webp"


def test_concurrent_resize_calls_are_batched(small_jpeg: bytes) -> None:
    backend = GpuBackend(xp=np, max_batch=4, max_wait_ms=50)
    results: list[Rendered] = []
    try:
        threads = [
            threading.Thread(target=lambda: results.append(backend.resize(small_jpeg, ResizeSpec(width=40), LIMITS)))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 8 and all(r.width == 40 for r in results)
        assert max(backend.batcher.batch_sizes) > 1
    finally:
        backend.close()


def test_heic_resizes_on_the_array_backend_like_the_cpu_one(gpu: GpuBackend, cpu: CpuBackend) -> None:
    # HEVC HEIF decodes through pillow-heif on the GPU backend's CPU decode too (codec.decode), not libvips.
    pillow_heif = require_module("pillow_heif", "pip install 'imgworker[heif]'")
    import io

    from PIL import Image

    pillow_heif.register_heif_opener()
    with Image.open(photo("dragonfly")) as im:
        buf = io.BytesIO()
        im.reduce(2).save(buf, format="HEIF", quality=92, enc_params={"preset": "ultrafast"})
    spec = ResizeSpec(width=200, format="png")
    a, b = gpu.resize(buf.getvalue(), spec, Limits()), cpu.resize(buf.getvalue(), spec, Limits())
    assert (a.width, a.height) == (b.width, b.height) and a.width == 200
    assert psnr(pixels(a), pixels(b)) > 35
