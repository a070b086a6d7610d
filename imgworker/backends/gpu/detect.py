"""Is there a usable CUDA device? CuPy and nvImageCodec are optional and imported lazily, only here."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

import pyvips

from imgworker.backends.gpu import codec_options
from imgworker.core.config import ConfigError

INSTALL_HINT = (
    "install imgworker[gpu] (CuPy for CUDA 12 drivers) or imgworker[gpu-cuda13] (CuPy for CUDA 13 drivers); "
    "`nvidia-smi` shows the driver's CUDA version"
)


class GpuUnavailable(ConfigError):
    """No usable CUDA device: the message says why and which extra to install."""


def _import_cupy() -> Any:
    return importlib.import_module("cupy")


@lru_cache(maxsize=1)
def probe() -> tuple[bool, str]:
    """(usable, reason). Cached: the answer does not change while the process runs."""
    try:
        cp = _import_cupy()
    except ImportError as exc:
        return False, f"cupy is not installed ({exc})"
    except Exception as exc:  # a broken CUDA install can raise anything at import
        return False, f"cupy failed to import: {type(exc).__name__}: {exc}"
    try:
        if not cp.cuda.is_available():
            return False, "cupy found no CUDA device or driver"
        count = int(cp.cuda.runtime.getDeviceCount())
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        runtime = cp.cuda.runtime.runtimeGetVersion()
        return True, f"{count} device(s), device 0 is {name}, CUDA runtime {runtime}"
    except Exception as exc:  # driver/runtime mismatch surfaces here (e.g. cupy-cuda13x on a CUDA 12 driver)
        return False, f"cupy could not use the device: {type(exc).__name__}: {exc}"


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device; never raises."""
    return probe()[0]


def require_gpu(option: str = "--backend gpu") -> Any:
    """Return the cupy module, or raise GpuUnavailable naming the extra to install."""
    ok, reason = probe()
    if not ok:
        raise GpuUnavailable(f"{option}: no usable CUDA device ({reason}); {INSTALL_HINT}; or use --backend cpu")
    return _import_cupy()


@lru_cache(maxsize=1)
def nvimgcodec() -> Any | None:
    """nvImageCodec's Python module (GPU JPEG decode) if importable and working, else None."""
    try:
        mod = importlib.import_module("nvidia.nvimgcodec")
        gpu_decoder(mod)  # fails without a device or without libnvjpeg
        return mod
    except Exception:
        return None


def gpu_decoder(mod: Any, cpu_threads: int = 0, options: str = "") -> Any:
    """A Decoder limited to the GPU backends, so a missing libnvjpeg fails here instead of silently decoding
    on the CPU: the hardware JPEG engines first (baseline 4:2:0/4:2:2/4:4:4), then nvJPEG's hybrid backend
    (Huffman on ``cpu_threads`` host threads, IDCT on the GPU: progressive files), then CUDA nvJPEG."""
    names = ("HW_GPU_ONLY", "HYBRID_CPU_GPU", "GPU_ONLY")
    kinds = [getattr(mod.BackendKind, k) for k in names if hasattr(mod.BackendKind, k)]
    # nvImageCodec's "codec:key=value ..." string; checked first, since nvImageCodec ignores unknown entries.
    extra = {"options": codec_options.checked(options, codec_options.DECODER_OPTIONS)} if options else {}
    return mod.Decoder(max_num_cpu_threads=cpu_threads, backends=[mod.Backend(k) for k in kinds], **extra)


@lru_cache(maxsize=1)
def hardware_jpeg() -> bool:
    """True if the GPU has hardware JPEG decode engines (A100/H100/H200 class) that nvImageCodec can use:
    a small baseline JPEG decodes with a Decoder limited to the ``HW_GPU_ONLY`` backend. Never raises."""
    mod = nvimgcodec()
    if mod is None or not hasattr(mod.BackendKind, "HW_GPU_ONLY"):
        return False
    try:
        ramp = pyvips.Image.xyz(640, 480)[0].cast("uchar")
        probe_jpeg = bytes(ramp.bandjoin([ramp, ramp]).copy(interpretation="srgb").jpegsave_buffer(Q=85))
        decoder = mod.Decoder(backends=[mod.Backend(mod.BackendKind.HW_GPU_ONLY)])
        return decoder.decode([mod.CodeStream(probe_jpeg)])[0] is not None
    except Exception:
        return False
