"""The banded resample maths (imgworker.arrays.resample) run with xp=numpy: no GPU needed.

The CuPy RawKernels are checked against this same code in test_gpu_cuda.py (-m gpu).
"""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
from support.corpus import PHOTOS, photo

from imgworker.arrays import resample as R

# Measured against libvips 8.18 `resize(kernel="lanczos3", gap=0)` on the corpus photos decoded at 1/4
# scale: 52.0-56.3 dB (differences are libvips' fixed-point 8-bit arithmetic vs our float32, and
# +-1 rounding). The bound sits ~6 dB below the worst value: a wrong centre offset (half a pixel) or a
# kernel without antialiasing drops this to ~30-35 dB, so it still catches real mistakes.
PSNR_VS_LIBVIPS_DB = 46.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def resize_u8(img: np.ndarray, w: int, h: int, kernel: str = "lanczos3") -> np.ndarray:
    return R.to_uint8(np, R.resize(np, img, w, h, kernel))


@pytest.mark.parametrize("kernel", R.KERNELS)
@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (1, 7), (7, 1), (10, 3), (3, 10), (4224, 512), (333, 334)])
def test_weights_sum_to_one_and_stay_in_bounds(kernel: str, n_in: int, n_out: int) -> None:
    b = R.band(n_in, n_out, kernel)
    assert b.out_size == n_out
    np.testing.assert_allclose(b.weights.sum(axis=1), 1.0, atol=1e-5)
    assert b.starts.min() >= 0
    assert int(b.starts.max()) + b.taps <= n_in
    # Banded, not dense: taps bounded by the kernel support, not the input size.
    if n_in > 100:
        assert b.taps <= 2 * 3 * (n_in / n_out) + 3


def test_band_is_symmetric_for_centred_sampling() -> None:
    # Resampling a mirrored signal must give the mirrored result (no half-pixel drift).
    rng = np.random.default_rng(1)
    line = rng.integers(0, 256, size=(1, 101, 1)).astype(np.float32)
    fwd = R.resize(np, line, 37, 1)
    back = R.resize(np, line[:, ::-1], 37, 1)[:, ::-1]
    np.testing.assert_allclose(fwd, back, atol=1e-3)


@pytest.mark.parametrize("kernel", R.KERNELS)
def test_constant_image_stays_constant(kernel: str) -> None:
    img = np.full((37, 53, 3), 200, np.uint8)
    for w, h in [(5, 9), (53, 37), (100, 1), (1, 100)]:
        out = resize_u8(img, w, h, kernel)
        assert out.shape == (h, w, 3)
        assert (out == 200).all()


def test_one_pixel_line_is_spread_not_lost() -> None:
    # A 1-pixel white line on black, shrunk 4x: antialiasing keeps its energy (~1/4 brightness) in the
    # output, where point sampling would either drop it or keep it at full brightness.
    img = np.zeros((64, 64, 1), np.uint8)
    img[:, 33] = 255
    out = R.resize(np, img, 16, 64)
    col_sum = out[0, :, 0].sum()
    assert abs(col_sum - 255 / 4) < 2.0
    assert out[0, :, 0].max() < 128  # spread, not a surviving full-brightness column


def test_checkerboard_downscale_is_uniform_grey() -> None:
    board = ((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)[..., None]
    ours = resize_u8(board, 100, 100)
    assert abs(float(ours.mean()) - 127.5) < 1.5
    assert float(ours.std()) < 3.0
    # Nearest neighbour aliases: the same downscale gives a high-contrast pattern.
    idx = (np.arange(100) * 512 / 100).astype(int)
    nearest = board[idx][:, idx]
    assert float(nearest.std()) > 100


@pytest.mark.parametrize(("shape", "size"), [((1, 300), (17, 1)), ((300, 1), (1, 23)), ((1, 1), (5, 4))])
def test_one_by_n_and_n_by_one(shape: tuple[int, int], size: tuple[int, int]) -> None:
    img = np.linspace(0, 255, shape[0] * shape[1]).reshape(*shape, 1).astype(np.uint8)
    out = resize_u8(img, *size)
    assert out.shape == (size[1], size[0], 1)
    assert int(out.min()) >= int(img.min()) - 1 and int(out.max()) <= int(img.max()) + 1


def test_odd_sizes_match_libvips() -> None:
    rng = np.random.default_rng(7)
    # Smooth random image (noise would make any two lanczos implementations differ by more).
    small = rng.integers(0, 256, size=(13, 17, 3)).astype(np.uint8)
    img = pyvips.Image.new_from_array(small).cast("uchar").resize(23, kernel="linear").numpy()
    w = img.shape[1]
    # Measured 46.6-51.2 dB: this synthetic image has detail near the output's Nyquist limit, where
    # libvips' 8-bit fixed-point weights and our float32 ones differ most; 43 dB is ~3.5 dB below that.
    for out_w in (201, 155, 101, 77):
        scale = out_w / w
        ref = pyvips.Image.new_from_array(img).cast("uchar").resize(scale, kernel="lanczos3", gap=0).numpy()
        ours = resize_u8(img, ref.shape[1], ref.shape[0])
        assert psnr(ours, ref) > 43.0


def test_alpha_is_resampled_premultiplied() -> None:
    # Transparent red next to opaque blue: premultiplying stops red bleeding into the blue edge.
    img = np.zeros((8, 16, 4), np.uint8)
    img[:, :8] = (255, 0, 0, 0)
    img[:, 8:] = (0, 0, 255, 255)
    x = R.unpremultiply(np, R.resize(np, R.premultiply(np, img), 4, 2))
    out = R.to_uint8(np, x)
    visible = out[..., 3] > 0
    assert (out[..., 0][visible] == 0).all()
    naive = resize_u8(img, 4, 2)
    assert naive[..., 0].max() > 0  # without premultiplying, red does bleed


@pytest.mark.parametrize(
    "name", [photo("baseline").name, photo("progressive").name, photo("dragonfly").name]
)
@pytest.mark.parametrize("target", [256, 700])
def test_photo_psnr_vs_libvips_lanczos3(name: str, target: int) -> None:
    base = pyvips.Image.new_from_file(str(PHOTOS / name), shrink=4)
    img = base.numpy()
    ref = base.resize(target / base.width, kernel="lanczos3", gap=0).numpy()
    ours = resize_u8(img, ref.shape[1], ref.shape[0])
    value = psnr(ours, ref)
    print(f"{name} -> {target}: {value:.1f} dB vs libvips")
    assert value > PSNR_VS_LIBVIPS_DB


def test_linear_and_area_kernels_are_close_to_lanczos_on_photos() -> None:
    img = pyvips.Image.new_from_file(str(photo("dragonfly")), shrink=8).numpy()
    ref = resize_u8(img, 200, 150)
    for kernel in ("linear", "area"):
        assert psnr(resize_u8(img, 200, 150, kernel), ref) > 30.0


def test_geometry_helpers() -> None:
    img = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert R.rotate90(np, img).shape == (3, 2, 4)
    np.testing.assert_array_equal(R.rotate90(np, img, 4), img)
    np.testing.assert_array_equal(R.flip(np, R.flip(np, img)), img)
    assert R.crop(img, 1, 0, 2, 1).shape == (1, 2, 4)
    padded = R.pad(np, img, 5, 4, 1, 1, (9, 9, 9, 255))
    assert padded.shape == (4, 5, 4)
    assert tuple(padded[0, 0]) == (9, 9, 9, 255)
    np.testing.assert_array_equal(padded[1:3, 1:4], img)
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255]]], np.uint8)
    flat = R.flatten(np, rgba, (0, 255, 0))
    np.testing.assert_allclose(flat[0, 0], (0, 255, 0))
    np.testing.assert_allclose(flat[0, 1], (255, 0, 0))
