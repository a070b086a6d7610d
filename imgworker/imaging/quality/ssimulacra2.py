"""SSIMULACRA2 (Jon Sneyers' perceptual metric, libjxl's tools/ssimulacra2.cc) in vectorised NumPy.

Scores as the reference Python package on PyPI (``ssimulacra2`` 0.3.0, the dev extra; tests check the two agree
within ±1): 100 is identical, 90 visually lossless, 80 very high, 70 high, 50 medium. The maths:

- sRGB to linear light (a 256-entry table), then to XYB (libjxl's opsin matrix, cube root), made positive;
- six scales, each half the last (2x2 box average in linear light);
- per scale and XYB channel: 1 - SSIM without the luminance denominator (mean and 4-norm over the image), and
  an edge map from |x - blur(x)| of both images (artifacts: edges the original lacks; detail lost: edges it
  had), with a Gaussian blur of sigma 1.5 (11 taps);
- a weighted sum of those 108 numbers, through the reference's polynomial and power to 0..100.

Why it is fast enough for a search (~10 ms for a 512x341 probe, not the package's ~0.7 s per 1024x768): the
reference image's pyramid, blurs and edge maps are computed once (``Reference``) and reused by every probe;
the blur as products with small banded matrices (BLAS); float32 instead of float64; and the terms whose
weight is below ``MIN_WEIGHT`` (the whole sixth scale, X and B at full scale, ...) are not computed: together
they move a score by far less than 0.1. The reference package's quirks are kept, as its scores are the
floors' scale: its blur zero-pads along x and reflects along y (it works on transposed planes), and an image
with fewer than six scales takes the weights in order, not by scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import threadpoolctl

F32 = npt.NDArray[np.float32]

SCALES = 6
C2 = 0.0009
SIGMA = 1.5
RADIUS = 5  # the reference's blur: round(3.2795 * sigma + 0.2546) rows of zeros; scipy's truncate 3.33
BLOCK = 32  # rows or columns per matrix product of the blur (fastest of 16-128 at 512 and 2048 px)
MIN_WEIGHT = 0.01  # terms weighted below this are skipped (their sum moves a score by < 0.1)

# libjxl's opsin absorbance matrix and bias.
_M = np.array([[0.30, 0.622, 0.078], [0.23, 0.692, 0.078],
               [0.24342268924547819, 0.20476744424496821, 0.5518098665095536]], dtype=np.float64)
_BIAS = 0.0037930732552754493
_CBRT_BIAS = float(np.cbrt(_BIAS))

# The reference's 108 weights, in the order it adds its terms: channel (X, Y, B), scale, norm (mean, 4-norm),
# then SSIM, artifact, detail lost. An image with fewer than 6 scales (a side under 256 px: no scale is smaller
# than 8 px) takes the first 18 per scale it has, as the reference does (and libjxl's tool): the weights do not
# stay with their scale.
WEIGHTS = np.array([
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0, 0.0004371155730107379, 0.0,
    1.1041726426657346, 0.00066284834129271, 0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0,
    1.8422455520539298, 11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833, 0.0,
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053, 0.0004550992113792063, 0.0, 0.0,
    0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
    0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296, 1.027889937768264,
    225.20515300849274, 0.0, 0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757, 0.0004485436923833408, 0.0, 0.0, 0.0,
    34.77906344483772, 44.835625328877896, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0008680556573291698, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0, 8.826982764996862,
    23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682, 0.9834382792465353, 0.0012286405048278493,
    171.2667255897307, 0.9807858872435379, 0.0, 0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
])

Rows = slice | list[int]


@dataclass(frozen=True)
class _Plan:
    """What to compute for an image of so many scales: per scale, the XYB planes whose terms count."""

    weights: npt.NDArray[np.float64]  # [channel, scale, norm, (ssim, artifact, detail)]; skipped terms 0
    channels: list[tuple[int, ...]]  # per scale: the planes made (0 X, 1 Y, 2 B)
    ssim: list[tuple[int, ...]]  # ... those whose SSIM terms count
    edge: list[tuple[int, ...]]  # ... those whose edge terms count
    ssim_rows: list[Rows]  # where they lie among the planes made (a slice, a view, where contiguous)
    edge_rows: list[Rows]


def _rows(channels: tuple[int, ...], subset: tuple[int, ...]) -> Rows:
    at = [channels.index(c) for c in subset]
    if not at:
        return slice(0, 0)
    return slice(at[0], at[-1] + 1) if at == list(range(at[0], at[0] + len(at))) else at


@functools.cache
def _plan(scales: int) -> _Plan:
    weights = WEIGHTS[: 18 * scales].reshape(3, scales, 2, 3)
    used = np.abs(weights) >= MIN_WEIGHT
    ssim = [tuple(c for c in range(3) if used[c, s, :, 0].any()) for s in range(scales)]
    edge = [tuple(c for c in range(3) if used[c, s, :, 1:].any()) for s in range(scales)]
    channels = [tuple(sorted(set(ssim[s]) | set(edge[s]))) for s in range(scales)]
    while channels and not channels[-1]:  # trailing scales with no term that counts are not computed
        channels.pop()
    return _Plan(np.where(used, weights, 0.0), channels, ssim, edge,
                 [_rows(channels[s], ssim[s]) for s in range(len(channels))],
                 [_rows(channels[s], edge[s]) for s in range(len(channels))])


def scales_of(height: int, width: int) -> int:
    """How many scales the reference computes: halving while both sides are at least 8 px, at most 6."""
    n = 0
    while n < SCALES and height >= 8 and width >= 8:
        n, height, width = n + 1, (height + 1) // 2, (width + 1) // 2
    return n


def _linear_table() -> npt.NDArray[np.float32]:
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LINEAR = _linear_table()


def _kernel() -> npt.NDArray[np.float32]:
    x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    k = np.exp(-0.5 * x * x / (SIGMA * SIGMA))
    return (k / k.sum()).astype(np.float32)


_K = _kernel()


def to_linear(pixels: npt.NDArray[np.uint8], background: float | None = None) -> F32:
    """(3, H, W) linear-light RGB of 8-bit pixels (H, W) or (H, W, 1-4). Alpha is blended onto a grey
    ``background`` (linear, 0..1; default 0.5)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    bands = pixels.shape[2]
    colour = pixels[:, :, :3] if bands >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
    rgb = np.take(_LINEAR, np.moveaxis(colour, 2, 0), mode="wrap")  # (3, H, W), contiguous; uint8 never wraps
    if bands in (2, 4):
        alpha = pixels[:, :, bands - 1].astype(np.float32) * np.float32(1 / 255)
        bg = np.float32(0.5 if background is None else background)
        rgb = (rgb - bg) * alpha + bg
    return rgb


def downsample(rgb: F32) -> F32:
    """2x2 box average; an odd last row or column averages the pixels there are (as the reference does)."""
    _, h, w = rgb.shape
    h2, w2 = h // 2 * 2, w // 2 * 2
    out = np.empty((3, (h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    a = rgb[:, :h2:2, :w2:2] + rgb[:, 1:h2:2, :w2:2]
    a += rgb[:, :h2:2, 1:w2:2]
    a += rgb[:, 1:h2:2, 1:w2:2]
    out[:, : h2 // 2, : w2 // 2] = a * np.float32(0.25)
    if w2 < w:  # last column: pairs of rows
        out[:, : h2 // 2, -1] = (rgb[:, :h2:2, -1] + rgb[:, 1:h2:2, -1]) * np.float32(0.5)
    if h2 < h:  # last row: pairs of columns
        out[:, -1, : w2 // 2] = (rgb[:, -1, :w2:2] + rgb[:, -1, 1:w2:2]) * np.float32(0.5)
    if w2 < w and h2 < h:
        out[:, -1, -1] = rgb[:, -1, -1]
    return out


def xyb(rgb: F32, channels: tuple[int, ...], out: F32 | None = None) -> F32:
    """The positive XYB planes ``channels`` (0 X, 1 Y, 2 B) of linear RGB, stacked (len(channels), H, W).

    With c = cbrt(opsin mix + bias): X' = 7 (c0 - c1) + 0.42, Y' = (c0 + c1) / 2 - cbrt(bias) + 0.01 and
    B' = c2 - (c0 + c1) / 2 + 0.55 (the reference's 14 x, y + 0.01 and b - y + 0.55, the biases cancelled)."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    c = []
    for row in range(3 if 2 in channels else 2):
        m = _M[row]
        v = r * np.float32(m[0])
        v += g * np.float32(m[1])
        v += b * np.float32(m[2])
        v += np.float32(_BIAS)  # > 0, as every term is: no clamp needed before the cube root
        c.append(np.cbrt(v, out=v))
    if out is None:
        out = np.empty((len(channels), *r.shape), dtype=np.float32)
    if 0 in channels:
        x = out[channels.index(0)]
        np.subtract(c[0], c[1], out=x)
        x *= np.float32(7.0)
        x += np.float32(0.42)
    half = np.add(c[0], c[1], out=c[0])
    half *= np.float32(0.5)
    if 1 in channels:
        np.add(half, np.float32(0.01 - _CBRT_BIAS), out=out[channels.index(1)])
    if 2 in channels:
        bp = out[channels.index(2)]
        np.subtract(c[2], half, out=bp)
        bp += np.float32(0.55)
    return out


@functools.lru_cache(maxsize=64)
def _bands(n: int, reflect: bool) -> tuple[tuple[int, int, int, int, F32], ...]:
    """The blur along an axis of length ``n`` as matrix products, one per block of ``BLOCK`` outputs:
    (first output, end, first input, end, matrix (outputs x inputs)). Beyond the ends: a reflection
    (``reflect``, half-sample symmetric as scipy's "reflect") or zeros."""
    out = []
    for o0 in range(0, n, BLOCK):
        o1 = min(n, o0 + BLOCK)
        i0, i1 = max(0, o0 - RADIUS), min(n, o1 + RADIUS)
        m = np.zeros((o1 - o0, i1 - i0), dtype=np.float32)
        for i in range(o0, o1):
            for j in range(-RADIUS, RADIUS + 1):
                src = i + j
                if reflect:
                    src = -src - 1 if src < 0 else 2 * n - src - 1 if src >= n else src
                elif not 0 <= src < n:
                    continue
                m[i - o0, src - i0] += _K[j + RADIUS]
        out.append((o0, o1, i0, i1, m))
    return tuple(out)


def blur(planes: F32) -> F32:
    """The reference's Gaussian blur (sigma 1.5, 11 taps) of each (H, W) plane: zeros beyond the left and right
    edges, reflection beyond the top and bottom.

    Computed as products with small banded matrices (one per block of 32 rows or columns, edges folded in):
    BLAS does 7x the arithmetic of an 11-tap loop but ~4x faster than NumPy's elementwise passes."""
    _single_threaded_blas()
    _, h, w = planes.shape
    mid = np.empty_like(planes)
    for o0, o1, i0, i1, m in _bands(h, True):
        np.matmul(m, planes[:, i0:i1, :], out=mid[:, o0:o1, :])
    out = np.empty_like(planes)
    for o0, o1, i0, i1, m in _bands(w, False):
        out[:, :, o0:o1] = mid[:, :, i0:i1] @ m.T
    return out


@functools.cache
def _single_threaded_blas() -> None:
    """One BLAS thread in this process: a worker runs one job per core, and OpenBLAS' own threads, spinning
    beside the other jobs, cost 20x the CPU time of the product (measured on 2048 px planes under load)."""
    threadpoolctl.threadpool_limits(1, user_api="blas")


def _norms(d: F32) -> tuple[list[float], list[float]]:
    """Per plane of ``d`` (>= 0): the mean and the 4-norm (the mean of d^4, to the 1/4)."""
    flat = d.reshape(d.shape[0], -1)
    n = flat.shape[1]
    means, l4 = [], []
    for row in flat:
        sq = row * row
        means.append(float(row.sum(dtype=np.float64)) / n)
        l4.append((float(np.dot(sq, sq)) / n) ** 0.25)
    return means, l4


@dataclass
class _Scale:
    """The reference image at one scale: its planes, their blur, and what the terms reuse."""

    img: F32  # the XYB planes of the SSIM channels (_Plan.ssim)
    mu: F32  # their blur
    var: F32  # blur(img^2) - mu^2
    edge: F32  # 1 + |img - blur(img)| of the edge channels (_Plan.edge)


class Reference:
    """The original image, prepared once for many ``score`` calls against it (one per probe of a search)."""

    def __init__(self, pixels: npt.NDArray[np.uint8], background: float | None = None) -> None:
        self.shape = pixels.shape[:2]
        self.background = background
        self.plan = plan = _plan(scales_of(*self.shape))
        self.scales: list[_Scale] = []
        rgb = to_linear(pixels, background)
        for s, channels in enumerate(plan.channels):
            if s:
                rgb = downsample(rgb)
            img = xyb(rgb, channels)
            ssim, edge = plan.ssim_rows[s], plan.edge_rows[s]
            mu = blur(img)
            var = blur(img[ssim] * img[ssim]) - mu[ssim] * mu[ssim]
            self.scales.append(_Scale(img[ssim], mu[ssim], var, 1.0 + np.abs(img[edge] - mu[edge])))


def score(ref: Reference, pixels: npt.NDArray[np.uint8]) -> float:
    """SSIMULACRA2 of ``pixels`` (the distorted image, same size) against ``ref``."""
    if pixels.shape[:2] != ref.shape:
        raise ValueError(f"images differ in size: {pixels.shape[:2]} vs {ref.shape}")
    plan = ref.plan
    terms = np.zeros_like(plan.weights)
    rgb = to_linear(pixels, ref.background)
    zero, one = np.float32(0), np.float32(1)
    for s, r in enumerate(ref.scales):
        if s:
            rgb = downsample(rgb)
        k, n = len(plan.channels[s]), len(plan.ssim[s])
        ssim, edge = plan.ssim_rows[s], plan.edge_rows[s]
        stack = np.empty((k + 2 * n, *rgb.shape[1:]), dtype=np.float32)
        img = xyb(rgb, plan.channels[s], out=stack[:k])
        np.multiply(img[ssim], img[ssim], out=stack[k : k + n])
        np.multiply(r.img, img[ssim], out=stack[k + n :])
        blurred = blur(stack)
        mu = blurred[:k]
        if n:
            m1, m2 = r.mu, mu[ssim]
            denom = blurred[k : k + n]  # blur(img2^2) - mu2^2 + var1 + C2
            denom -= m2 * m2
            denom += r.var
            denom += np.float32(C2)
            num = blurred[k + n :]  # (2 (blur(img1 img2) - mu1 mu2) + C2) (1 - (mu1 - mu2)^2)
            num -= m1 * m2
            num *= np.float32(2)
            num += np.float32(C2)
            diff = m1 - m2
            diff *= diff
            np.subtract(one, diff, out=diff)
            num *= diff
            num /= denom
            np.subtract(one, num, out=num)
            np.maximum(num, zero, out=num)
            mean, l4 = _norms(num)
            for i, c in enumerate(plan.ssim[s]):
                terms[c, s, 0, 0], terms[c, s, 1, 0] = mean[i], l4[i]
        if plan.edge[s]:
            ratio = np.subtract(img[edge], mu[edge])
            np.abs(ratio, out=ratio)
            ratio += one
            ratio /= r.edge
            ratio -= one
            art_mean, art_l4 = _norms(np.maximum(ratio, zero))
            np.negative(ratio, out=ratio)
            lost_mean, lost_l4 = _norms(np.maximum(ratio, zero, out=ratio))
            for i, c in enumerate(plan.edge[s]):
                terms[c, s, :, 1] = art_mean[i], art_l4[i]
                terms[c, s, :, 2] = lost_mean[i], lost_l4[i]
    return _final(float((plan.weights * np.abs(terms)).sum()))


def _final(raw: float) -> float:
    """The reference's mapping of the weighted sum to 0..100."""
    x = raw * 0.9562382616834844
    x = 2.326765642916932 * x - 0.020884521182843837 * x * x + 6.248496625763138e-05 * x * x * x
    return 100.0 - 10.0 * x ** 0.6276336467831387 if x > 0 else 100.0


def ssimulacra2(original: npt.NDArray[np.uint8], distorted: npt.NDArray[np.uint8]) -> float:
    """SSIMULACRA2 of ``distorted`` against ``original`` (8-bit, same size). With alpha, the worse of the
    scores over a dark and a light background (as libjxl's tool does)."""
    if original.ndim == 3 and original.shape[2] in (2, 4):
        return min(score(Reference(original, bg), distorted) for bg in (0.1, 0.9))
    return score(Reference(original), distorted)
