"""JPEG decode straight through libjpeg-turbo (simplejpeg), pixels handed to libvips from memory.

libvips' jpegload streams the file through its own libjpeg glue a strip at a time; simplejpeg decodes the
whole frame in one TurboJPEG call at the same DCT scale (1/2, 1/4, 1/8), same IDCT (islow) and same fancy
upsampling, so the pixels are libvips' own and colour, resize and encode stay in libvips. About 10-25 % of a
thumbnail job is saved (docs/performance.md).

The fast path is taken only where it is exact; ``decode_scaled`` returns None (the caller keeps libvips'
jpegload) for anything else:

* what the frame header says libjpeg-turbo's 8-bit TurboJPEG call cannot give as libvips would: CMYK/YCCK
  (4 components), 12/16-bit samples, lossless, hierarchical or arithmetic-coded frames, 2 components;
* a scaled frame over MAX_FRAME_BYTES (it would be held whole; libvips streams it);
* any libjpeg-turbo warning or error during the decode (``strict=True``: a premature end, corrupt data,
  extraneous bytes, bad restart markers). libvips then decodes the file again under the job's ``fail_on``
  level, so the verdict (DECODE_FAILED, or the lenient pixels) is exactly libvips' at every level; broken
  files pay two decodes, good ones one.

simplejpeg releases the GIL while libjpeg-turbo runs, so the worker's jobs in flight decode in parallel.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import pyvips

try:  # a default dependency; a missing install only costs speed (every JPEG takes libvips' jpegload)
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None

# SOF markers: 0xC0 baseline, 0xC1 extended, 0xC2 progressive (Huffman); the rest are refused.
_FAST_SOF = {0xC0, 0xC1, 0xC2}
_OTHER_SOF = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
              0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded", 0xCB: "arithmetic-coded",
              0xCD: "arithmetic-coded", 0xCE: "arithmetic-coded", 0xCF: "arithmetic-coded"}
# One call decodes the whole (scaled) frame into memory; past this, libvips' strip-streaming jpegload keeps a
# job's memory bounded (64 MiB: a 21 MP RGB frame, i.e. every 1/2-scale decode of a source up to 85 MP).
MAX_FRAME_BYTES = 64 * 2**20
_ICC = b"ICC_PROFILE\x00"
_EXIF = b"Exif\x00\x00"


@dataclass(frozen=True, slots=True)
class Frame:
    """What the markers before the first scan say (stored size, before EXIF orientation)."""

    width: int
    height: int
    components: int
    precision: int
    sof: int
    icc: bytes | None
    orientation: int


def scan_header(source: bytes) -> Frame | None:
    """The frame header, ICC profile and EXIF orientation, read from the markers; None if they do not parse."""
    if source[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(source)
    icc: list[bytes] = []
    orientation = 1
    exif_seen = False
    sof: tuple[int, int, int, int, int] | None = None
    while pos + 4 <= end:
        if source[pos] != 0xFF:
            return None
        marker = source[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: everything we need comes before it
            break
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", source, pos + 2)
        body = source[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker == 0xE2 and body.startswith(_ICC) and len(body) > 14:
            icc.append(body[14:])  # libvips joins the chunks in file order; so do we
        elif marker == 0xE1 and not exif_seen and body.startswith(_EXIF):
            exif_seen = True  # libvips reads only the first Exif block
            orientation = exif_orientation(body[6:])
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and sof is None:
            if len(body) < 6:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", body)
            sof = (marker, precision, width, height, components)
        pos += 2 + length
    if sof is None:
        return None
    marker, precision, width, height, components = sof
    return Frame(width, height, components, precision, marker, b"".join(icc) if icc else None, orientation)


def exif_orientation(tiff: bytes) -> int:
    """Orientation (tag 0x0112 of IFD0) from a TIFF-structured EXIF block; 1 when absent or out of range."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, kind, _n = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112:
                fmt = "H" if kind == 3 else "I" if kind == 4 else None
                if fmt is None:
                    return 1
                (value,) = struct.unpack_from(order + fmt, tiff, ifd + 2 + 12 * i + 8)
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


def refusal(frame: Frame | None) -> str | None:
    """Why the fast path would not be exact for this frame, or None when it is."""
    if simplejpeg is None:
        return "simplejpeg is not installed"
    if frame is None:
        return "markers do not parse"
    if frame.sof in _OTHER_SOF:
        return _OTHER_SOF[frame.sof]
    if frame.sof not in _FAST_SOF:
        return f"unknown frame type 0x{frame.sof:02X}"
    if frame.precision != 8:
        return f"{frame.precision}-bit samples"
    if frame.components not in (1, 3):
        return "CMYK/YCCK" if frame.components == 4 else f"{frame.components} components"
    if frame.width == 0 or frame.height == 0:
        return "size in DNL marker"
    return None


def decode_scaled(source: bytes, shrink: int, *, orientation: int | None = None,
                  frame: Frame | None = None) -> pyvips.Image | None:
    """The JPEG at 1/``shrink`` scale (as libvips' ``jpegload(shrink=...)`` would give it), or None.

    The image carries the embedded ICC profile and the EXIF orientation (``orientation``, the caller's header
    read, else the file's) as metadata, like jpegload's, so libvips' thumbnail/colourspace/autorot treat it
    the same. None: not exact here (see the module doc); decode with libvips instead.
    """
    frame = frame if frame is not None else scan_header(source)
    if refusal(frame) is not None or frame is None or simplejpeg is None:
        return None
    want_w, want_h = math.ceil(frame.width / shrink), math.ceil(frame.height / shrink)
    grey = frame.components == 1
    if want_w * want_h * (1 if grey else 3) > MAX_FRAME_BYTES:
        return None  # the whole frame would sit in memory at once; libvips streams it in strips instead
    try:
        # min_factor keeps libjpeg-turbo to scales of 1/shrink or smaller, min_* to exactly 1/shrink.
        pixels = simplejpeg.decode_jpeg(source, colorspace="GRAY" if grey else "RGB", min_factor=shrink,
                                        min_width=want_w, min_height=want_h, strict=True)
    except ValueError:
        return None  # a warning or an error: libvips decides, at the job's fail_on level
    height, width = pixels.shape[:2]
    if (width, height) != (want_w, want_h):
        return None
    image = pyvips.Image.new_from_memory(pixels.data, width, height, 1 if grey else 3, "uchar")
    # libjpeg-turbo rounds a scaled side up, libvips' jpegload down (it drops the partial last column/row).
    out_w, out_h = max(1, frame.width // shrink), max(1, frame.height // shrink)
    if (out_w, out_h) != (width, height):
        image = image.crop(0, 0, out_w, out_h)
    image = image.copy(interpretation="b-w" if grey else "srgb")
    if frame.icc is not None:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", frame.icc)
    orient = frame.orientation if orientation is None else orientation
    if orient != 1:
        image.set_type(pyvips.GValue.gint_type, "orientation", orient)
    return image


def fast_header(source: bytes) -> Frame | None:
    """The frame, when the fast path will decode it: lets the header check skip libvips' own header open
    (the second parse of the same markers, ~2 ms of a 20 MP job); None: ask libvips."""
    if source[:2] != b"\xff\xd8":
        return None
    frame = scan_header(source)
    return frame if refusal(frame) is None else None
