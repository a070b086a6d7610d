"""metadata: what the output keeps. Default: nothing (EXIF GPS, camera serials and XMP are stripped).

``keep: [copyright]`` keeps only the EXIF Copyright and Artist tags; ``icc`` the colour profile; ``exif``,
``xmp``, ``iptc`` those blocks whole; ``all`` everything. On the array executor the pixels carry no
metadata: ``array`` records what to keep, and the executor copies it from the decoded source onto the
encoder's image (arrays/executor.py ``to_encoder``) through the same ``keep_only`` (imaging/metadata.py), so
both outputs keep the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.imaging.metadata import COPYRIGHT_TAGS, keep_only
from imgworker.pipeline.steps.base import Opt, StepDef

KEEP = ("copyright", "exif", "icc", "xmp", "iptc", "all")


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    keep = set(o["keep"])
    ctx.keep = tuple(sorted(keep))
    return keep_only(image, keep)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    ctx.keep = tuple(sorted(set(o["keep"])))
    return img  # pixels unchanged: the metadata is attached at encode


def keep_flags(keep: tuple[str, ...], image: pyvips.Image) -> int:
    """libvips ForeignKeep flags for an encoder."""
    flags = pyvips.enums.ForeignKeep
    if "all" in keep:
        return int(flags.ALL)
    value = 0
    names = {"exif": flags.EXIF, "icc": flags.ICC, "xmp": flags.XMP, "iptc": flags.IPTC}
    for name in keep:
        value |= names.get(name, 0)
    if "copyright" in keep and any(f in image.get_fields() for f in COPYRIGHT_TAGS):
        value |= flags.EXIF
    return int(value)


STEP = StepDef("metadata", "strip metadata, or keep some", {"keep": Opt("list", (), choices=KEEP)}, vips, array,
               scale_invariant=True, per_pixel=True, shorthand="keep")
