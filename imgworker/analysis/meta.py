"""The ``meta`` fact: what the source is, from its header (no pixels decoded).

Width and height are as displayed (after EXIF orientation). EXIF date, camera make and model appear only
when the file has them; the ICC profile's description is read from its ``desc`` tag (ICC v2 text or v4
multi-localised text).
"""

from __future__ import annotations

import re
import struct
from typing import Any

import pyvips

from imgworker.imaging import heif

_SWAPS_SIDES = {5, 6, 7, 8}
_SPACES = {"srgb": "srgb", "rgb16": "srgb", "b-w": "grey", "grey16": "grey", "cmyk": "cmyk", "lab": "lab",
           "labs": "lab", "xyz": "xyz", "scrgb": "scrgb", "multiband": "multiband"}
_BITS = {"uchar": 8, "char": 8, "ushort": 16, "short": 16, "uint": 32, "int": 32, "float": 32, "double": 64}
# libvips shows an EXIF string as "value (value, ASCII, 6 components, 6 bytes)": keep the value.
_EXIF_SUFFIX = re.compile(r" \([^()]*, \d+ components?, \d+ bytes?\)$")
_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def icc_description(profile: bytes | None) -> str | None:
    """The profile's ``desc`` text, or None when there is no profile or no readable description."""
    if not profile or len(profile) < 132:
        return None
    try:
        (count,) = struct.unpack_from(">I", profile, 128)
        for i in range(min(count, 100)):
            sig, offset, size = struct.unpack_from(">4sII", profile, 132 + 12 * i)
            if sig != b"desc":
                continue
            tag = profile[offset : offset + size]
            if tag[:4] == b"desc":  # v2 textDescriptionType: a count, then ASCII with a NUL
                (n,) = struct.unpack_from(">I", tag, 8)
                return tag[12 : 12 + n].split(b"\0")[0].decode("latin-1").strip() or None
            if tag[:4] == b"mluc":  # v4: records of (language, country, length, offset), UTF-16BE
                length, rec_offset = struct.unpack_from(">II", tag, 20)
                return tag[rec_offset : rec_offset + length].decode("utf-16-be", "replace").strip("\0 ") or None
    except (struct.error, UnicodeDecodeError):
        return None
    return None


def exif_date(value: str | None) -> str | None:
    """EXIF's "2024:05:01 12:34:56" as ISO 8601 "2024-05-01T12:34:56" (other text as it is)."""
    if not value:
        return None
    m = _EXIF_DATE.match(value)
    return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}" if m else value


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
        if orientation in _SWAPS_SIDES:
            width, height = height, width
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
        from imgworker.backends.cpu import _translate

        raise _translate(exc, "source") from None
    for key, value in (("date", date), ("make", make), ("model", model)):
        if value:
            meta[key] = value
    return meta
