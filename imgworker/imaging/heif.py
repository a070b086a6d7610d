"""HEIC/HEIF with HEVC pictures (what iPhones upload), decoded by pillow-heif (libheif + libde265).

The pyvips binary wheel reads HEIF headers but has no HEVC decoder (AVIF it decodes itself), so sources whose
brand says HEVC come here. pillow-heif is the optional ``heif`` extra (docs/contract.md says why: HEVC
patents); without it such a source fails with UNSUPPORTED_IMAGE naming the extra.

The header is read first and the pixel limit checked before any pixel is decoded. libheif applies the
container's rotation and mirror (irot/imir), which is the picture's orientation in HEIF; the EXIF orientation
that cameras also write describes the same turn and is not applied a second time (as libvips, libheif and
browsers do). The ICC profile travels with the decoded pixels and converts the resampled result to sRGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyvips

from imgworker.core.errors import DecodeFailed, LimitExceeded, UnsupportedImage
from imgworker.core.limits import Limits
from imgworker.imaging.metadata import exif_date, icc_description

LOADER = "heic"
# ISO/IEC 23008-12 brands of HEVC-coded images and sequences; "mif1"/"msf1" are generic (checked below).
_HEVC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2"}
_AV1_BRANDS = {b"avif", b"avis"}


@dataclass(frozen=True, slots=True)
class HeifHeader:
    width: int  # as displayed (libheif applies irot/imir)
    height: int
    pages: int
    has_alpha: bool


def handles(source: bytes) -> bool:
    """True for an HEVC-coded HEIF file (by its ``ftyp`` brands): the files libvips' wheel cannot decode."""
    if len(source) < 16 or source[4:8] != b"ftyp":
        return False
    size = int.from_bytes(source[0:4], "big")
    major = source[8:12]
    compatible = {source[i : i + 4] for i in range(16, min(size, len(source), 256), 4)}
    if major in _HEVC_BRANDS:
        return True
    return major in _GENERIC_BRANDS and bool(compatible & _HEVC_BRANDS) and not compatible & _AV1_BRANDS


def _open(source: bytes) -> Any:
    try:
        import pillow_heif
    except ImportError:
        raise UnsupportedImage("source is HEIC (HEVC): this worker was installed without HEVC support; "
                               "install the 'heif' extra (pip install 'imgworker[heif]')") from None
    try:
        # Reads the boxes only: no pixel is decoded until .data is touched.
        return pillow_heif.open_heif(io.BytesIO(source), convert_hdr_to_8bit=True)
    except (ValueError, RuntimeError, OSError, SyntaxError) as exc:
        raise DecodeFailed(f"source could not be decoded: heic: {str(exc)[:300]}") from None


def _checked(source: bytes, limits: Limits) -> Any:
    heif_file = _open(source)
    width, height = heif_file.size
    if width * height > limits.max_source_pixels:
        raise LimitExceeded(
            f"source is {width}x{height} = {width * height} pixels; the limit is {limits.max_source_pixels}"
        )
    return heif_file


def probe(source: bytes, limits: Limits) -> HeifHeader:
    """Header only: sizes of the primary image, refused over the pixel limit before decoding."""
    heif_file = _checked(source, limits)
    width, height = heif_file.size
    return HeifHeader(width, height, len(heif_file), bool(heif_file.has_alpha))


def load(source: bytes, limits: Limits | None) -> pyvips.Image:
    """The primary image, decoded, as an 8-bit sRGB(A) libvips image carrying the file's ICC profile.

    ``limits`` None: the caller's probe checked the header already."""
    heif_file = _open(source) if limits is None else _checked(source, limits)
    try:
        data = heif_file.data  # the decode
        width, height = heif_file.size
        bands = 4 if heif_file.has_alpha else 3
        stride = heif_file.stride
    except (ValueError, RuntimeError, OSError) as exc:
        raise DecodeFailed(f"source could not be decoded: heic: {str(exc)[:300]}") from None
    image = pyvips.Image.new_from_memory(bytes(data), stride // bands, height, bands, "uchar")
    if stride != width * bands:  # rows padded by libheif
        image = image.crop(0, 0, width, height)
    image = image.copy(interpretation="srgb")
    icc = heif_file.info.get("icc_profile")
    if icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", bytes(icc))
    return image


def resized(source: bytes, size: tuple[int, int], *, inside: bool = False) -> pyvips.Image:
    """Decoded (header already probed) and resampled to ``size`` by libvips' thumbnail (``inside``: fit within
    it, else exactly). A file's ICC profile (iPhones: Display P3) converts the small result to sRGB."""
    image = load(source, None)
    managed = {"export_profile": "srgb"} if "icc-profile-data" in image.get_fields() else {}
    return image.thumbnail_image(size[0], height=size[1], size="both" if inside else "force", **managed)


def decode(source: bytes, size: tuple[int, int] | None) -> pyvips.Image:
    """A pipeline's one decode: at ``size`` (resized), or full size; sRGB either way."""
    if size is not None:
        return resized(source, size)
    image = load(source, None)
    return image.icc_transform("srgb", embedded=True) if "icc-profile-data" in image.get_fields() else image


def describe(source: bytes) -> dict[str, Any]:
    """The ``meta`` fact of an HEVC HEIF source, from its boxes (analysis.meta for the other formats)."""
    heif_file = _open(source)
    width, height = heif_file.size
    info = heif_file.info
    icc = info.get("icc_profile")
    meta: dict[str, Any] = {
        "width": width, "height": height, "format": "heic", "orientation": 1,
        "has_alpha": bool(heif_file.has_alpha), "pages": len(heif_file), "space": "srgb",
        "bits": int(info.get("bit_depth", 8)), "icc": icc_description(bytes(icc) if icc else None),
        "bytes": len(source),
    }
    exif = info.get("exif")
    if exif:
        from PIL import Image  # pillow-heif depends on Pillow

        tags = Image.Exif()
        tags.load(bytes(exif))
        sub = tags.get_ifd(0x8769)
        found = {"date": exif_date(sub.get(0x9003) or tags.get(0x0132)), "make": tags.get(0x010F),
                 "model": tags.get(0x0110)}
        meta.update({k: str(v).strip("\0 ") for k, v in found.items() if v and str(v).strip("\0 ")})
    return meta
