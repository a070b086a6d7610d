"""The search behind ``"quality": "auto"``: the lowest quality whose output scores at least a target.

Each probe encodes the image at one quality, decodes the bytes and scores them (SSIMULACRA2, ssimulacra2.py)
against the pixels the encoder was given: the output size, after resize, crop, pad and flatten. The reference
side of the metric is prepared once. Score rises with quality (nearly monotonically), so the search keeps a
bracket: the lowest quality seen to pass and the highest below it seen to fail, and stops when they are
adjacent, or when a pass scores within ``CLOSE`` of the target (the quality below would fall short).
Probes are placed by interpolation, not halving: the first at the quality that usually wins for this
format and target (``START``, measured on photos), the next from the typical slope of score against quality
(``SLOPE``), then secants between the probes (Illinois' rule against creeping from one side). On the benchmark
photos at 512 px: 2.4 encodes on average for JPEG, 3.4 for WebP (docs/performance.md).

An image that does not reach the target even at ``TOP`` gets ``TOP`` and says so (``reached`` False). The
caller's ``check`` runs before every probe (the job's deadline); ``memory_bytes`` is what a search holds, for the
job's memory budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

try:
    import simplejpeg
except ImportError:  # not on every image (the GPU device image): libvips decodes the probes, same pixels
    simplejpeg = None

from imgworker.core.formats import DEFAULT_QUALITY
from imgworker.imaging.quality import ssimulacra2

TOP = 100
BOTTOM = 10
MAX_PROBES = 10  # a bracket closes in 2-4; this bounds a curved, noisy one (bumps of ~1 point near the target)
# Per format: (target, quality) points; the first probe interpolates them for the job's target. And the score
# points per quality step the second probe assumes. Tuned on the sample photos at 512 px (examples/images: the
# lowest passing quality of every quality from 20 to 100, then the start and slope that needed the fewest
# probes in a replay of the search; a start just under the median winner closes the bracket soonest).
START: dict[str, tuple[tuple[float, int], ...]] = {
    "jpeg": ((65.0, 40), (75.0, 65), (85.0, 88)),
    "webp": ((65.0, 38), (75.0, 71), (85.0, 89)),
    "avif": ((65.0, 40), (75.0, 55), (85.0, 75)),
}
SLOPE = {"jpeg": 0.6, "webp": 0.6, "avif": 0.8}
# A pass scoring less than this (points) above the target ends the search without probing the quality below:
# one step down usually costs about SLOPE points, so that neighbour would most likely fail. On the benchmark
# photos at 512 px: 2.35 encodes per JPEG search instead of 3.06, 3.35 per WebP one instead of 4.47; 7 of 34
# searches end 1-2 qualities above the exact lowest (where the curve is flat), +0.13% (JPEG) and +0.40% (WebP)
# bytes over all photos. The floor is untouched: every output still scores at least the target.
CLOSE = dict(SLOPE)


@dataclass(frozen=True, slots=True)
class Found:
    """The search's answer: the encoded bytes at ``quality``, their ``score``, and how many encodes it took."""

    data: bytes
    quality: int
    score: float
    probes: int
    reached: bool  # score >= target; False: not even TOP reached it, and this is TOP
    limited_by: str | None = None  # "max_bytes": a size cap chose a lower quality; "too_small": not searched

    def fields(self, name: str, target: float) -> dict[str, Any]:
        """The output's result fields (docs/contract.md): quality, score, probes, auto, target, limited_by."""
        out: dict[str, Any] = {"quality": self.quality, "score": round(self.score, 2), "probes": self.probes,
                               "auto": name, "target": target}
        why = self.limited_by or (None if self.reached else "top_quality")
        if why is not None:
            out["limited_by"] = why
        return out

    def capped(self, data: bytes, quality: int, score: float) -> Found:
        """This search's answer replaced by a smaller encode that a size cap asked for."""
        return replace(self, data=data, quality=quality, score=score, limited_by="max_bytes")


def start_quality(fmt: str, target: float) -> int:
    """The first probe: the table's quality for ``target``, interpolated (extrapolated at the ends)."""
    pairs = list(itertools.pairwise(START[fmt]))
    (t0, q0), (t1, q1) = next((p for p in pairs if target <= p[1][0]), pairs[-1])
    q = q0 + (target - t0) * (q1 - q0) / (t1 - t0)
    return max(BOTTOM, min(TOP, round(q)))


def memory_bytes(width: int, height: int) -> int:
    """What a search holds at its peak: the reference's planes at every scale (float32), the probe's decode and
    its planes, the encoded probes (small beside the pixels). Measured with tracemalloc: 82 bytes per output
    pixel at 2048x1152 (a JPEG search of 3 probes); 96 leaves a margin."""
    return width * height * 96


def pixels_of(image: pyvips.Image) -> npt.NDArray[np.uint8]:
    """An 8-bit libvips image (what the encoder is given) as (H, W, bands) pixels, computed once."""
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands))


def decode(data: bytes, fmt: str, bands: int) -> npt.NDArray[np.uint8]:
    """The probe's pixels, (H, W, bands), as a viewer decodes them (libjpeg-turbo for JPEG, libvips else)."""
    if fmt == "jpeg" and bands in (1, 3) and simplejpeg is not None:
        return simplejpeg.decode_jpeg(data, colorspace="RGB" if bands == 3 else "GRAY")
    # An animated WebP is scored as its frame strip, every frame (the encoder was given the strip).
    return pixels_of(pyvips.Image.new_from_buffer(data, "", n=-1) if fmt == "webp" else
                     pyvips.Image.new_from_buffer(data, ""))


def _next(probes: dict[int, float], target: float, slope: float, close: float = 0.0) -> int | None:
    """The next quality to probe, or None when the answer is known (or all but known: a pass within ``close``
    points of the target)."""
    passing = sorted(q for q, s in probes.items() if s >= target)
    best = passing[0] if passing else None
    failing = sorted(q for q, s in probes.items() if s < target and (best is None or q < best))
    below = failing[-1] if failing else None
    if best is not None and (best <= BOTTOM or (below is not None and best - below <= 1)):
        return None  # the lowest passing quality, its lower neighbour seen to fail
    if best is not None and probes[best] - target < close:
        return None  # its lower neighbour would score about `slope` less: below the target
    if best is None and below is not None and below >= TOP:
        return None  # not even the top quality reaches it
    if best is not None and below is not None:
        # Secant between the bracket's ends, rounded up (a pass there closes the bracket from above); kept
        # strictly inside so the bracket shrinks every probe. Illinois' rule against creeping up a curved
        # stretch from one side: after two probes on the same side, the other end counts half as far off.
        s_lo, s_hi = probes[below], probes[best]
        order = list(probes)
        if len(order) >= 3 and (probes[order[-1]] < target) == (probes[order[-2]] < target):
            if probes[order[-1]] < target:
                s_hi = target + (s_hi - target) / 2
            else:
                s_lo = target - (target - s_lo) / 2
        guess = below + (target - s_lo) * (best - below) / max(s_hi - s_lo, 1e-6)
        return min(best - 1, max(below + 1, math.ceil(guess)))
    qs = sorted(probes)
    if len(qs) >= 2:  # the local slope from the two probes nearest the target
        near = sorted(qs, key=lambda q: abs(probes[q] - target))[:2]
        ds, dq = probes[near[0]] - probes[near[1]], near[0] - near[1]
        if dq and ds / dq > 0.05:
            slope = ds / dq
    if best is None:  # every probe fails: step up past the target (a pass there brackets the answer)
        assert below is not None
        return min(TOP, max(below + 1, math.ceil(below + (target - probes[below]) / slope)))
    return max(BOTTOM, min(best - 1, math.floor(best - (probes[best] - target) / slope)))


class Scorer:
    """Scores encodes of one image: its reference prepared once (twice with alpha: over a dark and a light
    background, the worse score counting, as ssimulacra2.ssimulacra2 does)."""

    def __init__(self, pixels: npt.NDArray[np.uint8], fmt: str) -> None:
        self.fmt = fmt
        self.bands = pixels.shape[2] if pixels.ndim == 3 else 1
        backgrounds = (0.1, 0.9) if self.bands in (2, 4) else (None,)
        self.refs = [ssimulacra2.Reference(pixels, bg) for bg in backgrounds]

    def __call__(self, data: bytes) -> float:
        decoded = decode(data, self.fmt, self.bands)
        return min(ssimulacra2.score(ref, decoded) for ref in self.refs)


def search(pixels: npt.NDArray[np.uint8], fmt: str, target: float, encode: Callable[[int], bytes],
           check: Callable[[], None] | None = None) -> Found:
    """The lowest quality whose encode (``encode(quality)``) of ``pixels`` (H, W, bands: what the encoder is
    given) scores at least ``target``; ``check`` before each probe (raises at the deadline). An image under 8 px
    on a side has no scale for SSIMULACRA2 to compare (every encode would score 100): it is written at the
    format's default quality, ``limited_by: too_small``."""
    if ssimulacra2.scales_of(pixels.shape[0], pixels.shape[1]) == 0:
        if check is not None:
            check()
        quality = DEFAULT_QUALITY[fmt]
        return Found(encode(quality), quality, 100.0, 1, True, "too_small")
    score = Scorer(pixels, fmt)
    probes: dict[int, float] = {}
    encoded: dict[int, bytes] = {}
    q: int | None = start_quality(fmt, target)
    while q is not None:
        if check is not None:
            check()
        data = encode(q)
        # Neighbouring qualities often give the very same file (libwebp maps runs of qualities to one
        # quantiser): the same bytes score the same, so the metric runs once per distinct file.
        same = next((p for p, d in encoded.items() if d == data), None)
        encoded[q], probes[q] = data, probes[same] if same is not None else score(data)
        q = _next(probes, target, SLOPE[fmt], CLOSE[fmt])
        if q is not None and len(probes) >= MAX_PROBES:
            q = TOP if not any(s >= target for s in probes.values()) and TOP not in probes else None
    passing = [p for p, s in probes.items() if s >= target]
    chosen = min(passing) if passing else TOP
    return Found(encoded[chosen], chosen, probes[chosen], len(probes), bool(passing))


def measure(pixels: npt.NDArray[np.uint8], data: bytes, fmt: str) -> float:
    """The score of one encode (``data``) of ``pixels``: for an output the search did not pick (max_bytes)."""
    return Scorer(pixels, fmt)(data)


def run(image: pyvips.Image, fmt: str, target: float, encode: Callable[[int], bytes],
        check: Callable[[], None] | None, charge: Callable[[int], None]) -> tuple[Found, npt.NDArray[np.uint8]]:
    """``search`` on a libvips image (8-bit, flattened: what the encoder is given), after ``charge``-ing the
    job's memory budget for it: the answer, and the pixels scored (to score another encode of them)."""
    charge(memory_bytes(image.width, image.height))
    pixels = pixels_of(image)
    return search(pixels, fmt, target, encode, check), pixels
