"""The ``meta`` fact: what the source is, from its header (no pixels decoded).

Width and height are as displayed (after EXIF orientation). EXIF date, camera make and model appear only
when the file has them; the ICC profile's description is read from its ``desc`` tag (ICC v2 text or v4
multi-localised text).
"""

from __future__ import annotations

import re
from typing import Any

import pyvips

from imgworker.imaging import heif
from imgworker.imaging.errors import translate
from imgworker.imaging.metadata import exif_date, icc_description
from imgworker.imaging.orientation import shown

_SPACES = {"srgb": "srgb", "rgb16": "srgb", "b-w": "grey", "grey16": "grey", "cmyk": "cmyk", "lab": "lab",
           "labs": "lab", "xyz": "xyz", "scrgb": "scrgb", "multiband": "multiband"}
_BITS = {"uchar": 8, "char": 8, "ushort": 16, "short": 16, "uint": 32, "int": 32, "float": 32, "double": 64}
# libvips shows an EXIF string as "value (value, ASCII, 6 components, 6 bytes)": keep the value.
_EXIF_SUFFIX = re.compile(r" \([^()]*, \d+ components?, \d+ bytes?\)$")


def _exif_text(image: pyvips.Image, fields: set[str], *names: str) -> str | None:
    for name in names:
        if name in fields:
            text = _EXIF_SUFFIX.sub("", str(image.get(name))).strip()
            if text:
                return text
    return None


def _format(loader: str, image: pyvips.Image, fields: set[str]) -> str:
    name = loader.replace("load_buffer", "").replace("load_source", "").replace("load", "")
    if name == "heif":
        compression = image.get("heif-compression") if "heif-compression" in fields else ""
        return "avif" if compression == "av1" else "heic"
    return {"jpg": "jpeg", "magick": "other"}.get(name, name)


def describe(source: bytes) -> dict[str, Any]:
    """The ``meta`` object of ``source`` (already through the header probe, so known to open)."""
    if heif.handles(source):
        return heif.describe(source)
    try:
        image = pyvips.Image.new_from_buffer(source, "")
        fields = set(image.get_fields())
        orientation = int(image.get("orientation")) if "orientation" in fields else 1
        width, height = image.width, image.height
        width, height = shown(width, height, orientation)
        icc = image.get("icc-profile-data") if "icc-profile-data" in fields else None
        meta: dict[str, Any] = {
            "width": width,
            "height": height,
            "format": _format(image.get("vips-loader"), image, fields),
            "orientation": orientation,
            "has_alpha": bool(image.hasalpha()),
            "pages": int(image.get("n-pages")) if "n-pages" in fields else 1,
            "space": _SPACES.get(image.interpretation, image.interpretation),
            "bits": _BITS.get(image.format, 8),
            "icc": icc_description(bytes(icc) if icc is not None else None),
            "bytes": len(source),
        }
        date = exif_date(_exif_text(image, fields, "exif-ifd2-DateTimeOriginal", "exif-ifd0-DateTime"))
        make = _exif_text(image, fields, "exif-ifd0-Make")
        model = _exif_text(image, fields, "exif-ifd0-Model")
    except pyvips.Error as exc:
        raise translate(exc, "source") from None
    for key, value in (("date", date), ("make", make), ("model", model)):
        if value:
            meta[key] = value
    return meta
