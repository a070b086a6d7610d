"""Dominant colour and a palette of up to 5 colours with their shares of the (opaque) pixels.

A small weighted k-means in RGB over the facts' grid (small.py, at most 64x64 pixels) as a 32-level histogram
(each cell stands for its pixels' mean colour and count): seeds from the luma fifths
(deterministic, and steady when the decode moves a few pixel values), Lloyd iterations to convergence, then
colours closer than MERGE_DISTANCE merged and those under MIN_SHARE dropped. Each colour is the mean of its
pixels. ``colour`` is the biggest; where others come within TIE_SHARE of it (a real tie, which a different
decode scale could turn either way: issue 27) the darkest of them, so the answer does not flip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

MAX_COLOURS = 5
ITERATIONS = 30
MERGE_DISTANCE = 24.0  # RGB units: closer colours read as one
MIN_SHARE = 0.01
TIE_SHARE = 0.02  # shares within 2 points of the biggest count as tied for ``colour``
Floats = npt.NDArray[np.float64]
_LEVELS = 32
_LUMA = np.array([0.299, 0.587, 0.114])


def _hex(rgb: Floats) -> str:
    r, g, b = (int(min(255, max(0, round(float(v))))) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _histogram(px: npt.NDArray[np.uint8]) -> tuple[Floats, Floats]:
    """(mean colour, count) of each occupied cell of a 32-level grid: a few hundred weighted points instead of
    thousands of pixels, and each cell's colour is its pixels' mean, so the grid does not round colours."""
    q = (px >> 3).astype(np.intp)
    keys = (q[:, 0] * _LEVELS + q[:, 1]) * _LEVELS + q[:, 2]
    _, cell = np.unique(keys, return_inverse=True)  # only the occupied cells: a few hundred, not 32 768
    counts = np.bincount(cell).astype(np.float64)
    sums = np.stack([np.bincount(cell, weights=px[:, c]) for c in range(3)], axis=1)
    return sums / counts[:, None], counts


def _seeds(points: Floats, counts: Floats) -> Floats:
    """The mean colours of the pixels' luma fifths, darkest first: quantiles barely move when the decode
    changes a few pixel values, where "the most populous histogram cells" jump between cells (issue 27)."""
    order = np.argsort(points @ _LUMA, kind="stable")
    cumulative = np.cumsum(counts[order])
    bounds = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, MAX_COLOURS) / MAX_COLOURS)
    parts = [part for part in np.split(order, bounds) if len(part)]
    return np.array([np.average(points[part], axis=0, weights=counts[part]) for part in parts])


def _assign(points: Floats, centres: Floats) -> npt.NDArray[np.intp]:
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every centre, so it drops out of the argmin.
    return np.argmin((centres**2).sum(axis=1)[None, :] - 2 * points @ centres.T, axis=1)


def _kmeans(points: Floats, counts: Floats, centres: Floats) -> npt.NDArray[np.intp]:
    """Weighted Lloyd iterations from ``centres``, to convergence (a cut-short run depends on where it
    started, which is what differs between decodes): each point's cluster."""
    # [count * colour, count] per point: one product per iteration gives every cluster's sums and weight.
    weighted = np.concatenate([counts[:, None] * points, counts[:, None]], axis=1)
    clusters = np.arange(len(centres))
    labels = _assign(points, centres)
    for _ in range(ITERATIONS):
        totals = (labels[None, :] == clusters[:, None]).astype(np.float64) @ weighted
        centres = np.where(totals[:, 3:] > 0, totals[:, :3] / np.maximum(totals[:, 3:], 1), centres)
        moved = _assign(points, centres)
        if np.array_equal(moved, labels):
            break
        labels = moved
    return labels


def palette(rgba: npt.NDArray[np.uint8]) -> dict[str, Any]:
    """``{"colour": "#rrggbb", "palette": [{"colour": ..., "share": 0.42}, ...]}`` of an (h, w, 4) image."""
    flat = rgba.reshape(-1, 4)
    opaque = flat[flat[:, 3] >= 128][:, :3]
    if len(opaque) == 0:
        return {"colour": None, "palette": []}
    points, counts = _histogram(opaque)
    labels = _kmeans(points, counts, _seeds(points, counts))
    # (pixel count, colour sum) per cluster, biggest first; close ones merged into the bigger.
    groups = sorted(((float(counts[labels == k].sum()), (points[labels == k] * counts[labels == k, None]).sum(0))
                     for k in np.unique(labels)), key=lambda g: -g[0])
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
    tied = [s / w for w, s in merged if w >= merged[0][0] - TIE_SHARE * total]
    colour = min(tied, key=lambda c: float(c @ _LUMA))
    return {"colour": _hex(colour), "palette": colours}
