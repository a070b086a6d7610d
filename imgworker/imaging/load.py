"""Decoding a source at the size a job needs: shrink-on-load (JPEG DCT scaling, libvips' thumbnail), EXIF
auto-orientation and 8-bit sRGB, with the loader's image kept where it can be killed at the deadline.

Decode strictness is ``fail_on`` (FAIL_ON; default ``warning``: a truncated or corrupt file fails with
DECODE_FAILED instead of producing grey or garbage; ``truncated`` is the lenient choice).
"""

from __future__ import annotations

from typing import Any

import pyvips

from imgworker.core.geometry import Geometry
from imgworker.imaging import heif, jpeg_fast
from imgworker.imaging.colour import to_srgb
from imgworker.imaging.errors import translate
from imgworker.imaging.orientation import SWAPS_SIDES
from imgworker.imaging.probe import SourceInfo

FAIL_ON = ("none", "truncated", "error", "warning")
NO_SHRINK_ON_LOAD = ("png", "tiff", "gif")


def shrink_on_load(src_w: int, src_h: int, out_w: int, out_h: int, *, spare: int = 1) -> int:
    """The biggest shrink-on-load (8, 4, 2) that still decodes at least ``spare`` times the output size.

    JPEG (``spare=1``): libvips' thumbnail keeps a factor of 2 above the target (a 20 MP photo to 512 px
    decodes at 1/4, to 2048 px at full size); like sharp's default ``fastShrinkOnLoad`` we decode at the
    smallest DCT scale that is still no smaller than the output, and let the reduce kernel do the rest: 2-4x
    less decode work. WebP (``spare=2``, thumbnail's own rule): its scale-on-load is a block average that adds
    aliasing, so a factor of two is left for the real (Lanczos) resize.
    """
    factor = min(src_w / out_w, src_h / out_h)
    return next((s for s in (8, 4, 2) if factor >= spare * s), 1)


def load_jpeg_resized(source: bytes, shown: tuple[int, int], size: tuple[int, int], *, fail_on: str,
                      cmyk: bool = False, orientation: int = 1, rotate: bool = True,
                      loaded: list[Any] | None = None, metadata: bool = False) -> pyvips.Image:
    """A JPEG resampled (lanczos3) to ``size``, decoded at the smallest DCT scale (``shrink_on_load``) that covers it.

    ``shown`` is the source's size as ``size`` is meant (displayed when ``rotate``); like ``thumbnail``, CMYK
    comes out sRGB (embedded profile, else a generic CMYK one) and other colour spaces as they are. Raises
    pyvips.Error; errors in the pixels surface when the result is evaluated. ``metadata``: the output keeps
    EXIF/XMP/IPTC, which only libvips' jpegload parses (the fast path carries the ICC profile and orientation).
    """
    shrink = shrink_on_load(shown[0], shown[1], size[0], size[1])
    # libjpeg-turbo in one call where that is exact (the same pixels); libvips' jpegload for the rest.
    image = None if cmyk or metadata else jpeg_fast.decode_scaled(source, shrink, orientation=orientation)
    fast = image is not None
    if image is None:
        image = pyvips.Image.jpegload_buffer(source, shrink=shrink, fail_on=fail_on, access="sequential")
    if loaded is not None:
        loaded.append(image)  # for kill_at: the loader's image is the one doing the work
    if cmyk and (orientation == 1 or not rotate):
        # thumbnail() imports CMYK to float XYZ before resampling (about half of a CMYK job); resample the
        # CMYK pixels instead and colour-transform only the small result with the embedded profile.
        image = image.resize(size[0] / image.width, vscale=size[1] / image.height)
        return image.icc_transform("srgb", embedded=True, input_profile="cmyk", intent="relative")
    if fast and image.get_typeof("icc-profile-data") == 0:
        # Nothing for thumbnail_image to do but resize and turn (no profile, 8-bit sRGB/grey): the same kernel
        # and pixels without its checks and extra pipeline stage (~0.5 ms of a 512 px thumbnail). An EXIF turn
        # goes on the small result once it is in memory: turning the lazy resize makes libvips compute it in
        # column order, which with thumbnail_image's own stages costs ~1 ms more per phone photo.
        turn = rotate and orientation != 1
        stored = (size[1], size[0]) if turn and orientation in SWAPS_SIDES else size
        resized = image.resize(stored[0] / image.width, vscale=stored[1] / image.height)
        if (resized.width, resized.height) == stored:
            return resized.copy_memory().autorot() if turn else resized
    return image.thumbnail_image(size[0], height=size[1], size="force", no_rotate=not rotate)


def thumbnail(source: bytes, geo: Geometry, fail_on: str, **options: Any) -> pyvips.Image:
    try:
        return pyvips.Image.thumbnail_buffer(
            source,
            geo.resize_w,
            height=geo.resize_h,
            size="force",
            option_string=f"fail_on={fail_on}",
            **options,
        )
    except pyvips.Error as exc:
        raise translate(exc, "source") from None


def load_resized(source: bytes, info: SourceInfo, geo: Geometry, fail_on: str,
                 loaded: list[Any] | None = None) -> pyvips.Image:
    """The source at ``geo``'s resize size, oriented, 8-bit sRGB; JPEGs decode at the smallest scale.
    The loader's image is appended to ``loaded`` where there is one to reach (for kill_at)."""
    if info.loader in NO_SHRINK_ON_LOAD and loaded is not None:
        # These loaders have no shrink-on-load, so thumbnail_image does what thumbnail_buffer would, and
        # the loader's image, the one doing the work, can be killed at the deadline.
        try:
            src = pyvips.Image.new_from_buffer(source, "", access="sequential", fail_on=fail_on)
            loaded.append(src)
            return to_srgb(src.thumbnail_image(geo.resize_w, height=geo.resize_h, size="force"))
        except pyvips.Error as exc:
            raise translate(exc, "source") from None
    if info.loader == heif.LOADER:
        return to_srgb(heif.resized(source, (geo.resize_w, geo.resize_h)))
    if info.loader != "jpeg" or info.pages > 1:
        return to_srgb(thumbnail(source, geo, fail_on))
    try:
        return to_srgb(load_jpeg_resized(source, (info.width, info.height), (geo.resize_w, geo.resize_h),
                                          fail_on=fail_on, cmyk=info.cmyk, orientation=info.orientation,
                                          loaded=loaded))
    except pyvips.Error as exc:
        raise translate(exc, "source") from None
