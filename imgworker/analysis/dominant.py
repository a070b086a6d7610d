"""Dominant colour and a palette of up to 5 colours with their shares of the (opaque) pixels.

A small k-means in RGB: seeds from the most populous cells of a 16-level-per-channel histogram (so the
result is deterministic), a few Lloyd iterations, then colours closer than MERGE_DISTANCE are merged and
those under MIN_SHARE dropped. Each colour is the mean of its pixels.
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


def _hex(rgb: npt.NDArray[np.float64]) -> str:
    r, g, b = (int(min(255, max(0, round(float(v))))) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _seeds(px: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    cells = (px // 16).astype(np.int64)
    keys = cells[:, 0] * 256 + cells[:, 1] * 16 + cells[:, 2]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    seeds: list[npt.NDArray[np.float64]] = []
    for idx in np.argsort(-counts, kind="stable"):
        centre = px[inverse == idx].mean(axis=0)
        if all(np.linalg.norm(centre - s) >= _SEED_SPACING for s in seeds):
            seeds.append(centre)
        if len(seeds) == MAX_COLOURS:
            break
    del uniq
    return np.array(seeds)


def palette(rgba: npt.NDArray[np.uint8]) -> dict[str, Any]:
    """``{"colour": "#rrggbb", "palette": [{"colour": ..., "share": 0.42}, ...]}`` of an (h, w, 4) image."""
    flat = rgba.reshape(-1, 4)
    opaque = flat[flat[:, 3] >= 128][:, :3].astype(np.float64)
    if len(opaque) == 0:
        return {"colour": None, "palette": []}
    centres = _seeds(opaque)
    for _ in range(ITERATIONS):
        labels = np.argmin(((opaque[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
        moved = np.array([opaque[labels == k].mean(axis=0) if np.any(labels == k) else centres[k]
                          for k in range(len(centres))])
        if np.allclose(moved, centres):
            break
        centres = moved
    labels = np.argmin(((opaque[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
    groups = [opaque[labels == k] for k in range(len(centres)) if np.any(labels == k)]
    groups.sort(key=len, reverse=True)
    merged: list[npt.NDArray[np.float64]] = []
    for group in groups:
        for i, kept in enumerate(merged):
            if np.linalg.norm(kept.mean(axis=0) - group.mean(axis=0)) < MERGE_DISTANCE:
                merged[i] = np.concatenate([kept, group])
                break
        else:
            merged.append(group)
    merged.sort(key=len, reverse=True)
    total = len(opaque)
    colours = [{"colour": _hex(g.mean(axis=0)), "share": round(len(g) / total, 3)}
               for g in merged if len(g) / total >= MIN_SHARE]
    return {"colour": colours[0]["colour"], "palette": colours}
