"""The project's nvImageCodec wrappers driven against the real library in its CPU-only mode (no GPU).

nvImageCodec runs every Decoder / Encoder on ``NVIMGCODEC_DEVICE_CPU_ONLY`` with its CPU backend here (the one
substitution: the GPU backends our code asks for are mapped to ``CPU_ONLY``); everything else is the library's:
CodeStream, DecodeParams, ColorSpec, EncodeParams, JpegEncodeParams, ChromaSubsampling, QualityType, the
batch calls, their keywords and results. So a renamed class, a removed keyword or a changed return shape in a new
nvidia-nvimgcodec wheel fails here, in CI, instead of on the first device run. ``cp`` is a NumPy stand-in for the
few CuPy calls the wrappers make (streams, asarray). Pixels and the JPEG engines themselves are the device
run's (tests/gpu/test_gpu_cuda.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import photo
from support.tools import GPU_CHECKS, require_module

from imgworker.arrays import device_io
from imgworker.backends.gpu import decode, detect
from imgworker.backends.gpu.decode import BatchDecoder, DecoderLayout
from imgworker.backends.gpu.encode import JpegEncoder
from imgworker.core.config import ConfigError


class CpuOnly:
    """nvidia.nvimgcodec in its CPU-only mode: the real module, every codec on the CPU device and backend."""

    def __init__(self, mod: Any) -> None:
        self._mod = mod
        cpu = mod.BackendKind.CPU_ONLY
        self.BackendKind = SimpleNamespace(HW_GPU_ONLY=cpu, HYBRID_CPU_GPU=cpu, GPU_ONLY=cpu, CPU_ONLY=cpu)

    def Decoder(self, **kwargs: Any) -> Any:
        return self._mod.Decoder(device_id=self._mod.NVIMGCODEC_DEVICE_CPU_ONLY, **kwargs)

    def Encoder(self, **kwargs: Any) -> Any:
        return self._mod.Encoder(device_id=self._mod.NVIMGCODEC_DEVICE_CPU_ONLY, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mod, name)


class _Stream:
    ptr = 0  # nvImageCodec's cuda_stream argument: the default stream

    def synchronize(self) -> None:
        pass


CP = SimpleNamespace(cuda=SimpleNamespace(Stream=lambda non_blocking=False: _Stream()), asarray=np.asarray,
                     zeros=np.zeros, uint8=np.uint8)


@pytest.fixture(scope="module")
def codecs() -> CpuOnly:
    return CpuOnly(require_module("nvidia.nvimgcodec", GPU_CHECKS))


def _stored(path: Any) -> np.ndarray:
    """libvips' decode of the file as stored (no EXIF turn), the reference for nvImageCodec's."""
    img = pyvips.Image.new_from_file(str(path))
    return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else float(10 * np.log10(255**2 / mse))


@pytest.mark.parametrize("layout", [DecoderLayout(1, False), DecoderLayout(2, True)], ids=["1-decoder", "2-split"])
def test_batch_decoder_decodes_a_batch_and_refuses_a_bad_file(codecs: CpuOnly, layout: DecoderLayout) -> None:
    files = [photo("dragonfly"), photo("exif6"), photo("baseline")]
    dec = BatchDecoder(CP, codecs, cpu_threads=1, layout=layout)  # the layout's options reach the Decoders
    images, ms = dec.decode([p.read_bytes() for p in files] + [b"\xff\xd8 not a jpeg"])
    assert ms > 0 and len(images) == 4 and images[3] is None
    for path, img in zip(files, images[:3], strict=True):
        want = _stored(path)
        assert img is not None and img.shape == want.shape and img.dtype == np.uint8, path.name
        assert _psnr(img, want) >= 40, path.name  # both libjpeg-turbo; no orientation applied (ours is later)


def test_device_io_decode_batch_marks_the_refused_jpeg(codecs: CpuOnly) -> None:
    good, bad = device_io.DeviceJpeg(photo("dragonfly").read_bytes()), device_io.DeviceJpeg(b"\xff\xd8\x00")
    works = [device_io.ArrayWork(lambda: None, good), device_io.ArrayWork(lambda: None, None),
             device_io.ArrayWork(lambda: None, bad)]
    assert device_io.decode_batch(BatchDecoder(CP, codecs, cpu_threads=1), works) == 2
    assert good.take(np).shape == (1200, 1600, 3) and good.timings["decode_gpu_batch_size"] == 2.0
    with pytest.raises(device_io.GpuDecodeRefused):
        bad.take(np)


def test_jpeg_encoder_honours_quality_subsampling_and_progressive(codecs: CpuOnly) -> None:
    enc = JpegEncoder(CP, codecs)
    assert enc.works()
    img = _stored(photo("dragonfly"))[:300, :400].copy()
    datas, ms = enc.encode([img, img, img], [85, 92, 85], [False, False, True])
    assert ms > 0 and all(d is not None and d[:2] == b"\xff\xd8" for d in datas)
    read = [pyvips.Image.new_from_buffer(d, "") for d in datas if d is not None]
    assert [r.get("jpeg-chroma-subsample") for r in read] == ["4:2:0", "4:4:4", "4:2:0"]  # libvips' rule
    assert [decode.frame_type(d) for d in datas if d is not None] == [0xC0, 0xC0, 0xC2]
    assert enc.progressive is True
    for r in read:
        back = np.ndarray(buffer=r.write_to_memory(), dtype=np.uint8, shape=(r.height, r.width, r.bands))
        assert _psnr(back, img) >= 30


def test_device_io_encode_through_the_real_encoder(codecs: CpuOnly) -> None:
    img = _stored(photo("dragonfly"))[:200, :300]  # a strided view: encode makes it contiguous first
    datas, _, error = device_io.encode(JpegEncoder(CP, codecs), np, [img], [80], [True])
    assert error is None and datas[0] is not None and decode.frame_type(datas[0]) == 0xC2


def test_misspelt_options_are_refused_before_the_library(codecs: CpuOnly) -> None:
    """nvImageCodec itself accepts a misspelt option silently (checked here too); our wrappers refuse it."""
    assert codecs.Decoder(options="nvjpeg_hw_decoder:force_batch_singel=1") is not None  # the library: silent
    with pytest.raises(ConfigError, match="force_batch_singel"):
        detect.gpu_decoder(codecs, 1, "nvjpeg_hw_decoder:force_batch_singel=1")
    with pytest.raises(ConfigError, match="num_cuda_stream"):
        JpegEncoder(CP, codecs, options=":num_cuda_stream=2")
    with pytest.raises(TypeError):  # the binding checks keywords: a renamed one fails loudly
        codecs.JpegEncodeParams(optimised_huffman=True)
