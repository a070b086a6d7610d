"""EXIF orientation (1-8) applied to array pixels: the array executor and the GPU decode turn with ``orient``,
as libvips' autorot does on the vips side (the sides' table is imaging/orientation.py).
"""

from __future__ import annotations

from typing import Any


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
