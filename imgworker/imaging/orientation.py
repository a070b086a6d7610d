"""The one orientation table: what EXIF orientation (1-8) does to a picture's sides.

Every place that needs the displayed size (the CPU probe, the ``meta`` fact, the pipeline header, the GPU plan)
asks ``shown``; pixels are turned by libvips' autorot on the vips side and by arrays/orientation.py ``orient``
on the array side.
"""

from __future__ import annotations

SWAPS_SIDES = frozenset({5, 6, 7, 8})  # transposed orientations: displayed width is the stored height


def shown(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) as displayed of a picture stored ``width`` x ``height`` with EXIF ``orientation``."""
    return (height, width) if orientation in SWAPS_SIDES else (width, height)
