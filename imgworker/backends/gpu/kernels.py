"""CuPy RawKernels for the banded separable resample (the fast path of resample.py's xp code).

One CUDA module, compiled once per process (and cached on disk by CuPy), whatever the image sizes: sizes,
tap counts and band pointers are kernel arguments. Each pass reads the input once per tap from L1/L2 and
writes the output once, so a resize is memory-bound at roughly (in + intermediate + out) bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from imgworker.arrays.resample import Band, band

SOURCE = r"""
template <typename T> __device__ __forceinline__ float load(T v) { return (float)v; }
template <typename T> __device__ __forceinline__ T store(float v);
template <> __device__ __forceinline__ float store<float>(float v) { return v; }
template <> __device__ __forceinline__ unsigned char store<unsigned char>(float v) {
    return (unsigned char)fminf(fmaxf(rintf(v), 0.0f), 255.0f);
}

// dst[i, j] = sum_k w[i, k] * src[starts[i] + k, j]; a row is W*C contiguous samples.
template <typename Tin, typename Tout>
__global__ void band_rows(const Tin* __restrict__ src, Tout* __restrict__ dst,
                          const int* __restrict__ starts, const float* __restrict__ weights,
                          int taps, int out_rows, int row_len) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= row_len) return;
    for (int i = blockIdx.y; i < out_rows; i += gridDim.y) {
        const float* w = weights + (size_t)i * taps;
        const Tin* s = src + (size_t)starts[i] * row_len + j;
        float acc = 0.0f;
        for (int k = 0; k < taps; ++k) acc += w[k] * load(s[(size_t)k * row_len]);
        dst[(size_t)i * row_len + j] = store<Tout>(acc);
    }
}

// dst[y, o, c] = sum_k w[o, k] * src[y, starts[o] + k, c] for an interleaved (rows, W, C) image.
template <typename Tin, typename Tout>
__global__ void band_cols(const Tin* __restrict__ src, Tout* __restrict__ dst,
                          const int* __restrict__ starts, const float* __restrict__ weights,
                          int taps, int rows, int in_w, int out_w, int channels) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= out_w * channels) return;
    int o = x / channels, c = x - o * channels;
    const float* w = weights + (size_t)o * taps;
    int s0 = starts[o];
    for (int y = blockIdx.y; y < rows; y += gridDim.y) {
        const Tin* s = src + ((size_t)y * in_w + s0) * channels + c;
        float acc = 0.0f;
        for (int k = 0; k < taps; ++k) acc += w[k] * load(s[(size_t)k * channels]);
        dst[(size_t)y * out_w * channels + x] = store<Tout>(acc);
    }
}
"""

_TYPES = {"uint8": "unsigned char", "float32": "float"}
NAMES = [f"{fn}<{_TYPES[a]}, {_TYPES[b]}>" for fn in ("band_rows", "band_cols") for a in _TYPES for b in _TYPES]

# What module() compiles, also compiled for sm_80 / sm_90 by tests/unit/backends/test_gpu_nvrtc.py (no GPU).
OPTIONS = ("-std=c++14",)

_BLOCK = 256
_MAX_GRID_Y = 65535

_lock = threading.Lock()
_module: Any = None


@dataclass(frozen=True, slots=True)
class DeviceBand:
    """A band's weights on the device and the event that marks their upload done.

    ``cp.asarray`` of host memory is asynchronous (CuPy stages it through pinned memory on the current
    stream), and the cache below is shared by every CUDA stream of the process: the next slot of a batch runs
    on another non-blocking stream and may find the entry before its copy has landed. So every user waits on
    ``ready`` (recorded on the uploading stream after the copies) before it launches a kernel that reads it.
    """

    starts: Any
    weights: Any
    taps: int
    ready: Any  # cupy.cuda.Event


# Device copies of band weights, keyed by (device, in, out, kernel): batches of same-size photos reuse them.
_bands: OrderedDict[tuple[int, int, int, str], DeviceBand] = OrderedDict()
_BANDS_MAX = 128


def module(cp: Any) -> Any:
    """The compiled RawModule (compiled on first use, then shared by every thread and size)."""
    global _module
    with _lock:
        if _module is None:
            mod = cp.RawModule(code=SOURCE, options=OPTIONS, name_expressions=NAMES)
            mod.compile()
            _module = mod
        return _module


def _kernel(cp: Any, fn: str, tin: Any, tout: Any) -> Any:
    return module(cp).get_function(f"{fn}<{_TYPES[str(tin)]}, {_TYPES[str(tout)]}>")


def device_band(cp: Any, n_in: int, n_out: int, kernel: str) -> DeviceBand:
    """The band's device weights, usable by kernels queued next on the current stream.

    A hit made on another stream is waited for (``stream.wait_event``: the GPU waits, not the host). An
    evicted entry is released only after the device is idle: CuPy's memory pool hands a freed block back to
    the stream that allocated it, which could overwrite it while a kernel on another stream still reads it.
    The engines call this under their batch lock, so no other thread is between a lookup and its launch.
    """
    stream = cp.cuda.get_current_stream()
    key = (cp.cuda.Device().id, n_in, n_out, kernel)
    with _lock:
        hit = _bands.get(key)
        if hit is not None:
            _bands.move_to_end(key)
    if hit is not None:
        stream.wait_event(hit.ready)
        return hit
    b: Band = band(n_in, n_out, kernel)
    starts, weights = cp.asarray(b.starts), cp.asarray(b.weights)  # queued on ``stream``
    ready = cp.cuda.Event(disable_timing=True)
    ready.record(stream)
    entry = DeviceBand(starts, weights, b.taps, ready)
    evicted: list[DeviceBand] = []
    with _lock:
        _bands[key] = entry
        while len(_bands) > _BANDS_MAX:
            evicted.append(_bands.popitem(last=False)[1])
    if evicted:
        cp.cuda.runtime.deviceSynchronize()  # every kernel that may read them is done
        evicted.clear()
    return entry


def _rows(cp: Any, src: Any, n_out: int, kernel: str, out_dtype: Any) -> Any:
    n_in, w, c = (int(s) for s in src.shape)
    wb = device_band(cp, n_in, n_out, kernel)
    starts, weights, taps = wb.starts, wb.weights, wb.taps
    dst = cp.empty((n_out, w, c), dtype=out_dtype)
    row_len = w * c
    grid = ((row_len + _BLOCK - 1) // _BLOCK, min(n_out, _MAX_GRID_Y))
    fn = _kernel(cp, "band_rows", src.dtype, dst.dtype)
    fn(grid, (_BLOCK,), (src, dst, starts, weights, cp.int32(taps), cp.int32(n_out), cp.int32(row_len)))
    return dst


def _cols(cp: Any, src: Any, n_out: int, kernel: str, out_dtype: Any) -> Any:
    rows, n_in, c = (int(s) for s in src.shape)
    wb = device_band(cp, n_in, n_out, kernel)
    starts, weights, taps = wb.starts, wb.weights, wb.taps
    dst = cp.empty((rows, n_out, c), dtype=out_dtype)
    grid = ((n_out * c + _BLOCK - 1) // _BLOCK, min(rows, _MAX_GRID_Y))
    fn = _kernel(cp, "band_cols", src.dtype, dst.dtype)
    ints = (cp.int32(taps), cp.int32(rows), cp.int32(n_in), cp.int32(n_out), cp.int32(c))
    args = (src, dst, starts, weights, *ints)
    fn(grid, (_BLOCK,), args)
    return dst


def resize(cp: Any, img: Any, out_w: int, out_h: int, kernel: str = "lanczos3", out_dtype: Any = None) -> Any:
    """Resize a C-contiguous (H, W, C) uint8/float32 cupy array on the current stream.

    Same maths and pass order as resample.resize; the intermediate is float32, the output ``out_dtype``
    (default: the input's dtype; uint8 outputs are rounded and clamped in the kernel).
    """
    out_dtype = cp.dtype(out_dtype or img.dtype)
    x = cp.ascontiguousarray(img)
    h, w = int(x.shape[0]), int(x.shape[1])
    passes = [(0, h, out_h), (1, w, out_w)]
    passes.sort(key=lambda p: p[2] / p[1])
    todo = [p for p in passes if p[1] != p[2]]
    if not todo:
        return x.astype(out_dtype, copy=False)
    for n, (axis, _, n_out) in enumerate(todo):
        dtype = out_dtype if n == len(todo) - 1 else cp.float32
        x = _rows(cp, x, n_out, kernel, dtype) if axis == 0 else _cols(cp, x, n_out, kernel, dtype)
    return x
