"""The one orientation rule: what EXIF orientation (1-8) does to a picture's sides and to its pixels.

Every place that needs the displayed size (the CPU probe, the pipeline header, the GPU plan) asks ``shown``;
the array executor and the GPU decode turn pixels with ``orient`` (libvips' autorot does it on the vips side).
"""

from __future__ import annotations

from typing import Any

SWAPS_SIDES = frozenset({5, 6, 7, 8})  # transposed orientations: displayed width is the stored height


def shown(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) as displayed of a picture stored ``width`` x ``height`` with EXIF ``orientation``."""
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def orient(xp: Any, img: Any, orientation: int) -> Any:
    """Apply EXIF ``orientation`` (1-8) to an (H, W, C) array like libvips' autorot; returns a view."""
    if orientation in (5, 7):
        img = xp.swapaxes(img, 0, 1)  # transpose; 7 is the transverse: transpose, then rotate 180
    turns = {3: 2, 6: 3, 7: 2, 8: 1}.get(orientation, 0)  # numpy's rot90 turns counter-clockwise
    if turns:
        img = xp.rot90(img, k=turns, axes=(0, 1))
    if orientation == 2:
        img = xp.flip(img, axis=1)
    elif orientation == 4:
        img = xp.flip(img, axis=0)
    return img
