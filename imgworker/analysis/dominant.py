"""Dominant colour and a palette of up to 5 colours with their shares of the (opaque) pixels.

A small weighted k-means in RGB over a 16-level-per-channel histogram (each cell stands for its pixels' mean
colour and count, so a photo's 10 000 pixels become a few hundred points): seeds from the most populous cells
(deterministic), a few Lloyd iterations, then colours closer than MERGE_DISTANCE merged and those under
MIN_SHARE dropped. Each colour is the mean of its pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

MAX_COLOURS = 5
ITERATIONS = 8
MERGE_DISTANCE = 24.0  # RGB units: closer colours read as one
MIN_SHARE = 0.01
_SEED_SPACING = 48.0
_LEVELS = 16
Floats = npt.NDArray[np.float64]


def _hex(rgb: Floats) -> str:
    r, g, b = (int(min(255, max(0, round(float(v))))) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _histogram(px: npt.NDArray[np.uint8]) -> tuple[Floats, Floats]:
    """(mean colour, count) of each occupied cell."""
    q = (px >> 4).astype(np.intp)  # 16 levels: the top 4 bits
    keys = (q[:, 0] * _LEVELS + q[:, 1]) * _LEVELS + q[:, 2]
    size = _LEVELS**3
    counts = np.bincount(keys, minlength=size).astype(np.float64)
    sums = np.stack([np.bincount(keys, weights=px[:, c], minlength=size) for c in range(3)], axis=1)
    occupied = counts > 0
    return sums[occupied] / counts[occupied, None], counts[occupied]


def _seeds(points: Floats, counts: Floats) -> Floats:
    """The most populous cells, each at least _SEED_SPACING from the seeds before it."""
    order = np.argsort(-counts, kind="stable")
    candidates = points[order]
    free = np.ones(len(candidates), dtype=bool)
    seeds: list[Floats] = []
    while len(seeds) < MAX_COLOURS and free.any():
        seed = candidates[int(np.argmax(free))]  # the first free one: the most populous left
        seeds.append(seed)
        free &= ((candidates - seed) ** 2).sum(axis=1) >= _SEED_SPACING**2
    return np.array(seeds)


def _assign(points: Floats, centres: Floats) -> npt.NDArray[np.intp]:
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every centre, so it drops out of the argmin.
    return np.argmin((centres**2).sum(axis=1)[None, :] - 2 * points @ centres.T, axis=1)


def palette(rgba: npt.NDArray[np.uint8]) -> dict[str, Any]:
    """``{"colour": "#rrggbb", "palette": [{"colour": ..., "share": 0.42}, ...]}`` of an (h, w, 4) image."""
    flat = rgba.reshape(-1, 4)
    opaque = flat[flat[:, 3] >= 128][:, :3]
    if len(opaque) == 0:
        return {"colour": None, "palette": []}
    points, counts = _histogram(opaque)
    centres = _seeds(points, counts)
    labels = _assign(points, centres)
    for _ in range(ITERATIONS):
        weight = np.bincount(labels, weights=counts, minlength=len(centres))
        sums = np.bincount(np.repeat(labels, 3) * 3 + np.tile(np.arange(3), len(labels)),
                           weights=(counts[:, None] * points).ravel(), minlength=3 * len(centres)).reshape(-1, 3)
        centres = np.where(weight[:, None] > 0, sums / np.maximum(weight, 1)[:, None], centres)
        moved = _assign(points, centres)
        if np.array_equal(moved, labels):
            break
        labels = moved
    # (weight, weighted colour sum) per cluster, biggest first; close ones merged into the bigger.
    groups = sorted(((float(counts[labels == k].sum()), (points[labels == k] * counts[labels == k, None]).sum(0))
                     for k in range(len(centres)) if np.any(labels == k)), key=lambda g: -g[0])
    merged: list[tuple[float, Floats]] = []
    for weight_k, sum_k in groups:
        for i, (w, s) in enumerate(merged):
            if np.linalg.norm(s / w - sum_k / weight_k) < MERGE_DISTANCE:
                merged[i] = (w + weight_k, s + sum_k)
                break
        else:
            merged.append((weight_k, sum_k))
    merged.sort(key=lambda g: -g[0])
    total = float(counts.sum())
    colours = [{"colour": _hex(s / w), "share": round(w / total, 3)} for w, s in merged if w / total >= MIN_SHARE]
    return {"colour": colours[0]["colour"], "palette": colours}
