"""Tests that need a CUDA device (run with `pytest -m gpu`, on the GPU machine: benchmarks/gpu/check.sh).

The CuPy RawKernels must match resample.py's numpy code (the reference tested in CI) to within float32
rounding: at most 1 level on uint8 outputs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import BAD, PHOTOS, photo

from imgworker.arrays import resample as R
from imgworker.backends.base import Rendered
from imgworker.backends.gpu import GpuBackend, gpu_available
from imgworker.core.contract import FITS, ResizeSpec
from imgworker.core.errors import Unavailable
from imgworker.core.limits import Limits

pytestmark = pytest.mark.gpu

LIMITS = Limits()
NAMES = [photo("baseline").name, photo("progressive").name, photo("exif6").name]


@pytest.fixture(scope="module")
def cp() -> Any:
    assert gpu_available(), "these tests need a CUDA device"
    import cupy

    return cupy


@pytest.fixture(scope="module")
def gpu(cp: Any) -> Iterator[GpuBackend]:
    backend = GpuBackend(max_batch=8, max_wait_ms=5)
    yield backend
    backend.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("kernel", R.KERNELS)
@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((300, 400, 3), (97, 61)),
        ((1, 500, 3), (31, 1)),
        ((500, 1, 1), (1, 7)),
        ((64, 48, 4), (200, 150)),
        ((1000, 1500, 3), (512, 341)),
        ((37, 41, 2), (37, 9)),
    ],
)
def test_rawkernel_matches_numpy(cp: Any, kernel: str, shape: tuple[int, ...], size: tuple[int, int]) -> None:
    from imgworker.backends.gpu import kernels

    img = np.random.default_rng(3).integers(0, 256, size=shape).astype(np.uint8)
    ref = R.to_uint8(np, R.resize(np, img, *size, kernel))
    out = cp.asnumpy(kernels.resize(cp, cp.asarray(img), *size, kernel, cp.uint8))
    assert out.shape == ref.shape
    assert int(np.abs(out.astype(int) - ref).max()) <= 1
    f = cp.asnumpy(kernels.resize(cp, cp.asarray(img.astype(np.float32)), *size, kernel, cp.float32))
    np.testing.assert_allclose(f, R.resize(np, img, *size, kernel), atol=0.05)


def test_kernels_compile_once(cp: Any) -> None:
    from imgworker.backends.gpu import kernels

    mod = kernels.module(cp)
    img = cp.zeros((50, 60, 3), cp.uint8)
    for w in (10, 11, 12, 200):
        kernels.resize(cp, img, w, w)
    assert kernels.module(cp) is mod


def test_a_new_size_on_many_streams_reads_finished_weights(cp: Any) -> None:
    """Issue 27's race on the device: the band weights of a size pair nobody has used yet, uploaded by the first
    stream and found in the cache by seven others at once, each launching at once; every slot must match the
    NumPy reference (a slot that read weights still in flight gives garbage, far beyond 1 level). The CPU
    model of the same ordering is tests/unit/backends/test_gpu_kernel_cache.py."""
    from imgworker.backends.gpu import kernels

    rng = np.random.default_rng(5)
    for trial in range(12):  # a new (in, out) pair each time: a cold cache entry per trial
        h, w = 900 + trial, 1300 + 3 * trial
        img = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
        ref = R.to_uint8(np, R.resize(np, img, 313 + trial, 207 + trial, "lanczos3"))
        dev = cp.asarray(img)
        cp.cuda.get_current_stream().synchronize()
        streams = [cp.cuda.Stream(non_blocking=True) for _ in range(8)]
        outs = []
        for s in streams:
            with s:
                outs.append(kernels.resize(cp, dev, 313 + trial, 207 + trial, "lanczos3", cp.uint8))
        for s in streams:
            s.synchronize()
        for k, out in enumerate(outs):
            assert int(np.abs(cp.asnumpy(out).astype(int) - ref).max()) <= 1, (trial, k)


@pytest.mark.parametrize("name", NAMES)
def test_gpu_backend_matches_numpy_pipeline(gpu: GpuBackend, name: str) -> None:
    source = (PHOTOS / name).read_bytes()
    ref = GpuBackend(xp=np, gpu_decode="never")
    try:
        for fit in FITS:
            spec = ResizeSpec(width=640, height=480, fit=fit, format="png")
            a, b = gpu.resize(source, spec, LIMITS), ref.resize(source, spec, LIMITS)
            assert (a.width, a.height) == (b.width, b.height)
            pa = pyvips.Image.new_from_buffer(a.data, "").numpy()
            pb = pyvips.Image.new_from_buffer(b.data, "").numpy()
            # With a CPU decode only the kernels differ (<= 1 level): > 50 dB. A GPU decode is full-size
            # nvJPEG + Lanczos where the reference shrinks on load (DCT block average) first: looser bound.
            assert psnr(pa, pb) > (35.0 if "decode_gpu" in a.timings else 50.0), (name, fit)
    finally:
        ref.close()


def test_concurrent_jobs_are_batched_on_the_gpu(gpu: GpuBackend) -> None:
    source = photo("dragonfly").read_bytes()
    results: list[Rendered] = []
    errors: list[BaseException] = []

    def job() -> None:
        try:
            results.append(gpu.resize(source, ResizeSpec(width=256), LIMITS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 16
    assert max(gpu.batcher.batch_sizes) > 1


def test_out_of_memory_shrinks_then_falls_back(cp: Any) -> None:
    # dragonfly -> 1500 px decodes at 1/2 (2112x1584: 10 MB) and needs a ~28 MB float intermediate, so a
    # 20 MB pool cannot hold even one: the batch is halved down to 1, then each image takes the fallback.
    source = photo("dragonfly").read_bytes()
    pool = cp.get_default_memory_pool()
    for fallback in ("cpu", "retry"):
        backend = GpuBackend(max_batch=4, gpu_decode="never", oom_fallback=fallback)
        pool.free_all_blocks()
        pool.set_limit(size=20 * 1024 * 1024)
        try:
            out = backend.resize_batch([(source, ResizeSpec(width=1500), LIMITS)] * 3)
        finally:
            pool.set_limit(fraction=0.5)
            backend.close()
        assert len(out) == 3
        if fallback == "cpu":
            assert all(isinstance(r, Rendered) and r.width == 1500 for r in out), out
            assert all(r.timings["batch_size"] == 1 and r.timings["oom_fallback"] for r in out)  # type: ignore[union-attr]
        else:
            assert all(isinstance(r, Unavailable) and r.retryable for r in out), out


@pytest.fixture(scope="module")
def gpu_decoding(cp: Any) -> Iterator[GpuBackend]:
    from imgworker.backends.gpu import detect

    assert detect.nvimgcodec() is not None, "nvImageCodec (with nvJPEG) must be installed for these tests"
    backend = GpuBackend(max_batch=16, max_wait_ms=10, gpu_decode="always")
    yield backend
    backend.close()


def test_hardware_jpeg_engines_are_detected(cp: Any) -> None:
    # The lent machines are H100/H200s, which have them; "auto" then sends every baseline JPEG to the GPU.
    from imgworker.backends.gpu import detect

    assert detect.hardware_jpeg()
    backend = GpuBackend(max_batch=2)
    try:
        assert backend.hardware_jpeg and backend.gpu_decode == "auto"
    finally:
        backend.close()


@pytest.mark.parametrize("name", NAMES)
def test_gpu_decode_matches_the_cpu_decode_pipeline(gpu_decoding: GpuBackend, name: str) -> None:
    # Baseline and EXIF orientation 6 decode on the GPU (the orientation applied by decode.orient) and land
    # within the GPU-decode bound of the numpy pipeline; the progressive file is routed to libvips.
    source = (PHOTOS / name).read_bytes()
    ref = GpuBackend(xp=np, gpu_decode="never")
    try:
        spec = ResizeSpec(width=640, height=480, fit="cover", format="png")
        a, b = gpu_decoding.resize(source, spec, LIMITS), ref.resize(source, spec, LIMITS)
    finally:
        ref.close()
    if "progressive" in name:
        assert a.timings["decode_routed_cpu"] == 1.0 and "decode_gpu" not in a.timings, a.timings
    else:
        assert "decode_gpu" in a.timings and "decode_gpu_refused" not in a.timings, a.timings
    assert (a.width, a.height) == (b.width, b.height) == (640, 480)
    pa = pyvips.Image.new_from_buffer(a.data, "").numpy()
    pb = pyvips.Image.new_from_buffer(b.data, "").numpy()
    assert psnr(pa, pb) > 35.0, name


def test_gpu_decode_batches_concurrent_jobs_and_bad_files_fail_like_cpu(gpu_decoding: GpuBackend) -> None:
    from imgworker.core.errors import DecodeFailed

    sources = [(PHOTOS / p).read_bytes() for p in NAMES]
    bad = [(BAD / p).read_bytes() for p in ("truncated_dragonfly.jpg", "corrupt_scan_dragonfly.jpg")]
    results: list[Any] = [None] * 40

    def job(i: int) -> None:
        src = bad[i % 2] if i % 10 == 9 else sources[i % len(sources)]
        try:
            results[i] = gpu_decoding.resize(src, ResizeSpec(width=512), LIMITS)
        except BaseException as exc:
            results[i] = exc

    gpu_decoding.batcher.batch_sizes.clear()
    threads = [threading.Thread(target=job, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, r in enumerate(results):
        if i % 10 == 9:
            assert isinstance(r, DecodeFailed), (i, r)
        else:
            assert isinstance(r, Rendered) and r.width == 512, (i, r)
            # progressive (seeding, i % 3 == 1) on libvips, the baseline ones on the GPU decoder
            assert ("decode_gpu" in r.timings) is (i % 3 != 1), (i, r.timings)
    assert max(gpu_decoding.batcher.batch_sizes) > 1


@pytest.fixture(scope="module")
def gpu_encoding(cp: Any) -> Iterator[GpuBackend]:
    backend = GpuBackend(max_batch=8, max_wait_ms=5, gpu_encode="always")
    yield backend
    backend.close()


@pytest.mark.parametrize("quality", [85, 92])  # 4:2:0 below Q 90, 4:4:4 from it (libvips' default)
@pytest.mark.parametrize("name", [photo("baseline").name, photo("exif6").name])
def test_gpu_jpeg_encode_matches_libvips(gpu_encoding: GpuBackend, name: str, quality: int) -> None:
    # The same resized pixels encoded by nvImageCodec (optimized Huffman) and by libvips (optimize_coding):
    # each decoded JPEG against the unencoded resize (PNG) must be as good, and about as small.
    source = (PHOTOS / name).read_bytes()
    plain = GpuBackend(max_batch=2, gpu_encode="never")
    try:
        ref = plain.resize(source, ResizeSpec(width=512, format="png"), LIMITS)
        ours = gpu_encoding.resize(source, ResizeSpec(width=512, quality=quality), LIMITS)
        theirs = plain.resize(source, ResizeSpec(width=512, quality=quality), LIMITS)
    finally:
        plain.close()
    assert "encode_gpu" in ours.timings and "encode_gpu_failed" not in ours.timings, ours.timings
    assert "encode_gpu" not in theirs.timings and "encode" in theirs.timings
    assert ours.data[:2] == b"\xff\xd8" and (ours.width, ours.height) == (theirs.width, theirs.height)
    px = [pyvips.Image.new_from_buffer(r.data, "").numpy() for r in (ref, ours, theirs)]
    assert px[1].shape == px[0].shape == (ours.height, ours.width, 3)
    ours_db, theirs_db = psnr(px[1], px[0]), psnr(px[2], px[0])
    print(f"{name} q{quality}: GPU {len(ours.data)} B {ours_db:.2f} dB, CPU {len(theirs.data)} B {theirs_db:.2f} dB")
    assert abs(ours_db - theirs_db) < 0.5, (ours_db, theirs_db)
    assert abs(len(ours.data) / len(theirs.data) - 1) < 0.05, (len(ours.data), len(theirs.data))


def test_gpu_encode_batch_mixes_qualities_and_leaves_others_to_libvips(gpu_encoding: GpuBackend) -> None:
    jpeg = photo("dragonfly").read_bytes()
    rgba = photo("rgba").read_bytes()
    items = [
        (jpeg, ResizeSpec(width=300, quality=85), LIMITS),
        (jpeg, ResizeSpec(width=301, quality=95), LIMITS),
        (jpeg, ResizeSpec(width=302, format="png"), LIMITS),
        (rgba, ResizeSpec(width=200, format="jpeg"), LIMITS),  # RGBA flattened by libvips
    ]
    out = gpu_encoding.resize_batch(items)
    assert all(isinstance(r, Rendered) for r in out), out
    r85, r95, png, flat = out
    assert isinstance(r85, Rendered) and isinstance(r95, Rendered) and isinstance(png, Rendered)
    assert isinstance(flat, Rendered)
    assert "encode_gpu" in r85.timings and "encode_gpu" in r95.timings
    assert "encode_gpu" not in png.timings and "encode_gpu" not in flat.timings
    assert len(r95.data) > len(r85.data)  # the quality reached the encoder
    for r, w, fmt in ((r85, 300, "jpeg"), (r95, 301, "jpeg"), (png, 302, "png"), (flat, 200, "jpeg")):
        img = pyvips.Image.new_from_buffer(r.data, "")
        assert (img.width, r.width, r.format) == (w, w, fmt)
        assert img.get("vips-loader").startswith(fmt) and img.bands == 3
