"""Metadata on the libvips side: what an output keeps of the source's (the metadata step, both executors),
and the two header values the ``meta`` fact reads from raw bytes (EXIF date, ICC profile description).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection

import pyvips

COPYRIGHT_TAGS = ("exif-ifd0-Copyright", "exif-ifd0-Artist")
_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def keep_only(image: pyvips.Image, keep: Collection[str]) -> pyvips.Image:
    """``image`` with the EXIF tags ``keep: [copyright]`` drops removed (the encoder's keep flags do the rest)."""
    if "copyright" not in keep or set(keep) & {"exif", "all"}:
        return image
    image = image.copy()  # never edit a shared image's metadata in place
    for name in image.get_fields():
        if name.startswith("exif-ifd") and name not in COPYRIGHT_TAGS:
            image.remove(name)
    return image


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
