"""Issue 27: each pixel fact is a property of the source, the same whatever the job's output size and on the
CPU worker (facts from its own decode) and the array worker (facts_of_source's small decode, builtin.py).

Tolerances (docs/contract.md, "Image facts"): dominant colour within CIE76 ``MAX_DELTA_E``, phash within
``MAX_PHASH_BITS`` bits, blurhash/thumbhash the same average colour within 2 quantisation steps and the same
shape terms within ``MAX_AC_STEPS``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgworker.analysis.source import facts_of_source
from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import ResizeSpec
from imgworker.core.limits import Limits

PHOTOS = Path(__file__).resolve().parents[3] / "examples" / "images"
SIZES = (256, 512, 1024, 2048)
PIXEL = ("dominant", "phash", "thumbhash", "blurhash")
MAX_DELTA_E = 3.0
MAX_PHASH_BITS = 4
MAX_AC_STEPS = 3
_B83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def lab(colour: str) -> np.ndarray:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a: str, b: str) -> float:
    return float(np.linalg.norm(lab(a) - lab(b)))


def b83(s: str) -> int:
    v = 0
    for ch in s:
        v = v * 83 + _B83.index(ch)
    return v


def blurhash_terms(h: str) -> tuple[np.ndarray, np.ndarray]:
    """(DC as sRGB 0..255, AC as quantised 0..18 values) of a blurhash string."""
    dc = b83(h[2:6])
    ac = [b83(h[i:i + 2]) for i in range(6, len(h), 2)]
    return (np.array([dc >> 16, (dc >> 8) & 255, dc & 255]),
            np.array([[v // 361, (v // 19) % 19, v % 19] for v in ac]).ravel())


def thumbhash_terms(h: str) -> tuple[np.ndarray, np.ndarray]:
    """(L, P, Q DC terms, 6 bits each; AC nibbles) of a base64 thumbhash."""
    raw = base64.b64decode(h)
    h24 = raw[0] | raw[1] << 8 | raw[2] << 16
    alpha = bool(h24 >> 23)
    start = 5 + (1 if alpha else 0)
    nibbles = [n for byte in raw[start:] for n in (byte & 15, byte >> 4)]
    return np.array([h24 & 63, (h24 >> 6) & 63, (h24 >> 12) & 63]), np.array(nibbles)


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """How far apart two fact sets are, one number per fact (the units of the tolerances above)."""
    out = {"dominant": delta_e(a["dominant"]["colour"], b["dominant"]["colour"]),
           "phash": float(bin(int(a["phash"], 16) ^ int(b["phash"], 16)).count("1"))}
    for fact, terms in (("blurhash", blurhash_terms), ("thumbhash", thumbhash_terms)):
        (dc_a, ac_a), (dc_b, ac_b) = terms(a[fact]), terms(b[fact])
        if ac_a.shape != ac_b.shape:
            out[fact] = 99.0
            continue
        out[fact] = float(max(np.abs(dc_a - dc_b).max() * MAX_AC_STEPS / 2, np.abs(ac_a - ac_b).max(initial=0)))
    return out


def every_path(source: bytes) -> dict[str, dict[str, Any]]:
    """The facts of one source from each path: the CPU resize at each size and the array worker's."""
    limits = Limits()
    out = {f"cpu {w}": CpuBackend().resize(source, ResizeSpec(width=w, analyze=PIXEL), limits).analysis
           for w in SIZES}
    out["array"] = facts_of_source(source, PIXEL, limits)
    return out


def report() -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    for path in sorted(PHOTOS.glob("*.*")):
        if path.suffix == ".md":
            continue
        found = every_path(path.read_bytes())
        for name, facts in found.items():
            rows.append((path.name, name, differences(facts, found["array"]) | {"colour": facts["dominant"]["colour"]}))
    return rows


@pytest.mark.parametrize("photo", sorted(p.name for p in PHOTOS.glob("*.*") if p.suffix != ".md"))
def test_facts_are_the_same_whatever_the_size_and_worker(photo: str) -> None:
    found = every_path((PHOTOS / photo).read_bytes())
    bad = []
    for name, facts in found.items():
        for other, theirs in found.items():
            d = differences(facts, theirs)
            limits = {"dominant": MAX_DELTA_E, "phash": MAX_PHASH_BITS, "blurhash": MAX_AC_STEPS,
                      "thumbhash": MAX_AC_STEPS}
            bad += [f"{name} vs {other}: {fact} {d[fact]:.1f} > {limit}" for fact, limit in limits.items()
                    if d[fact] > limit]
    assert not bad, "\n".join(bad[:12])


if __name__ == "__main__":
    for photo, name, d in report():
        print(f"{photo:36} {name:9} " + " ".join(f"{k} {v if isinstance(v, str) else round(v, 1)}"
                                                  for k, v in d.items()))
