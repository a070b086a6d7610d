"""Where a crop window goes: the 9 gravities, libvips smart crop, detected faces, or the job's focal point.

``crop`` is the vips executor, ``crop_array`` the array one; both place the window with ``decide``, so a CPU
worker and a GPU or numpy worker crop the same window of the same photo. The gravities and the focal point
(clamped into the image) are geometry (``window``). A smart crop (``attention``, ``entropy``) and the face box
are libvips' / OpenCV's on a small 8-bit sRGB preview of the part of the *source* the image shows
(``source_preview``: one libvips decode of the job's bytes, identical on every worker), mapped back to the
image's scale. Deciding on each executor's own pixels is not enough: they differ by a level or two (another
decoder, another resampler), and libvips' attention maximum or entropy comparison flips on such noise for
~6 % of windows (measured on the sample photos with +-2 levels of noise). Only when a step before the crop
made the image something other than a part of the source (extract, extend, rotate, flip, trim; ``ctx.view``
is None) is the decision taken on a preview of the executor's own pixels, still by libvips.
Tests: tests/unit/arrays/test_arrays_executor_contract.py (the same window within 2 px on every sample photo,
across executors and across decoders), tests/integration/test_numpy_worker.py (whole jobs on both workers).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import pyvips

from imgworker.arrays import image as arrays
from imgworker.core.errors import ImgworkerError, InternalError
from imgworker.core.limits import Limits
from imgworker.imaging.load import load_jpeg_resized
from imgworker.imaging.orientation import shown as stored_size
from imgworker.imaging.probe import probe
from imgworker.pipeline.steps.base import GRAVITIES, SMART
from imgworker.pipeline.steps.colour import to_srgb

POSITIONS = GRAVITIES + SMART
# Smart crops are decided on a preview this size (libvips' attention scores a 32 px copy anyway; its entropy
# costs ~90 ms here, 4x that at 512 px); faces need more pixels for the Haar cascade.
PREVIEW_SIDE = 256
_FACE_SIDE = 640


def offsets(gravity: str, free_w: int, free_h: int) -> tuple[int, int]:
    """Left/top of a window in a box with ``free_w`` x ``free_h`` spare pixels, for one of the 9 gravities."""
    x = 0 if "west" in gravity else free_w if "east" in gravity else free_w // 2
    y = 0 if "north" in gravity else free_h if "south" in gravity else free_h // 2
    return x, y


def _around(cx: float, cy: float, size: tuple[int, int], w: int, h: int) -> tuple[int, int]:
    """Window of w x h centred on (cx, cy) pixels, kept inside an image of ``size`` (width, height)."""
    left = min(max(0, round(cx - w / 2)), size[0] - w)
    top = min(max(0, round(cy - h / 2)), size[1] - h)
    return left, top


def window(position: str, size: tuple[int, int], w: int, h: int, ctx: Any) -> tuple[int, int]:
    """Left/top of a w x h window for a gravity or the focal point (the same on both executors)."""
    if position == "focal" and ctx is not None and ctx.focal is not None:
        return _around(ctx.focal[0] * size[0], ctx.focal[1] * size[1], size, w, h)
    return offsets(position if position in GRAVITIES else "centre", size[0] - w, size[1] - h)


def preview_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The preview's (width, height): ``size`` scaled to at most ``side`` px on its long side, never enlarged."""
    scale = min(1.0, side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _host_8bit(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB or grey (alpha kept), as the array executor's decode gives it."""
    if image.format in ("float", "double") and image.interpretation in ("srgb", "b-w", "multiband"):
        image = image.rint().cast("uchar")
    return to_srgb(image)


def preview_vips(image: pyvips.Image, side: int) -> pyvips.Image:
    """The vips executor's preview of ``image`` (libvips lanczos3), 8-bit sRGB or grey."""
    pw, ph = preview_size((image.width, image.height), side)
    if (pw, ph) != (image.width, image.height):
        image = image.resize(pw / image.width, vscale=ph / image.height, kernel="lanczos3")
        if (image.width, image.height) != (pw, ph):  # float rounding in vips_resize
            image = image.gravity("centre", pw, ph, extend="copy")
    return _host_8bit(image)


def preview_array(xp: Any, img: Any, side: int) -> pyvips.Image:
    """The array executor's preview of (H, W, C) ``img``: downloaded, then ``preview_vips`` (one resampler for
    both executors: a preview made on the device moved 2 % of the windows by more than 2 px)."""
    return preview_vips(arrays.to_vips(arrays.download(arrays.to_uint8(xp, img))), side)


def smart_window(preview: pyvips.Image, size: tuple[int, int], w: int, h: int,
                 interesting: str) -> tuple[int, int]:
    """Left/top of a w x h window of an image of ``size``: libvips' smart crop on its ``preview``."""
    sx, sy = preview.width / size[0], preview.height / size[1]
    pw, ph = min(preview.width, max(1, round(w * sx))), min(preview.height, max(1, round(h * sy)))
    cut = preview.smartcrop(pw, ph, interesting=interesting)
    left, top = -cut.xoffset, -cut.yoffset
    if (sx, sy) == (1.0, 1.0):
        return left, top
    return _around((left + pw / 2) / sx, (top + ph / 2) / sy, size, w, h)


def decode_source(source: bytes, side: int, orient: bool, limits: Limits) -> pyvips.Image:
    """The source at most ``side`` px, as shown when ``orient``: the JPEG shrink-on-load decode (libjpeg-turbo,
    the CPU worker's own fast path, exact) resampled by libvips, or libvips' thumbnail for other formats."""
    info = probe(source, limits)  # header only (ms); the job's own check passed it already
    shown = (info.width, info.height) if orient else stored_size(info.width, info.height, info.orientation)
    size = preview_size(shown, side)
    if info.loader == "jpeg" and info.pages == 1:
        return load_jpeg_resized(source, shown, size, fail_on="none", cmyk=info.cmyk,
                                 orientation=info.orientation, rotate=orient)
    return pyvips.Image.thumbnail_buffer(source, size[0], height=size[1], size="force", no_rotate=not orient)


def source_preview(ctx: Any, side: int) -> pyvips.Image | None:
    """The part of the job's source that the current image shows (``ctx.view``), from one small decode of the
    source bytes (``decode_source``, at most ``side`` px, oriented as the job orients it, 8-bit sRGB): the same
    pixels on every worker, whatever its executor decoded. None when there is no view (a step before made the image
    something else) or libvips cannot read the source (HEIC: pillow-heif's); cached per job."""
    view = getattr(ctx, "view", None)
    source = getattr(ctx, "source", None)
    if view is None or source is None:
        return None
    key = ("source-preview", side)
    if key not in ctx.cache:
        try:
            ctx.cache[key] = _host_8bit(decode_source(source, side, ctx.orient, ctx.limits)).copy_memory()
        except (pyvips.Error, ImgworkerError):
            ctx.cache[key] = None  # e.g. HEVC HEIF (pillow-heif's): the executor's own pixels decide
    whole: pyvips.Image | None = ctx.cache[key]
    if whole is None:
        return None
    x0, y0 = round(view[0] * whole.width), round(view[1] * whole.height)
    x1, y1 = max(x0 + 1, round(view[2] * whole.width)), max(y0 + 1, round(view[3] * whole.height))
    return whole.crop(x0, y0, min(x1, whole.width) - x0, min(y1, whole.height) - y0)


def decide(own: Any, size: tuple[int, int], w: int, h: int, position: str, ctx: Any) -> tuple[int, int]:
    """Left/top of the w x h window at ``position`` in an image of ``size``.

    Smart positions are decided on the source's preview when the image still shows a part of the source
    (``source_preview``: identical on every worker); else on ``own(side)``, a preview of the executor's own
    pixels (one implementation, but pixels that may differ by a level between workers)."""
    if position not in ("attention", "entropy", "faces"):
        return window(position, size, w, h, ctx)

    def preview(side: int) -> pyvips.Image:
        found = source_preview(ctx, side)
        return own(side) if found is None else found

    if position == "faces":
        found = source_preview(ctx, _FACE_SIDE)
        key = ("face-box", ctx.view, size) if found is not None else None
        if key is not None and key in ctx.cache:
            box = ctx.cache[key]  # the Haar cascade once per job and view (~0.1-1 s): outputs share it
        else:
            box = face_box(found if found is not None else own(_FACE_SIDE), size)
            if key is not None:
                ctx.cache[key] = box
        if box is not None:
            return _around(box[0] + box[2] / 2, box[1] + box[3] / 2, size, w, h)
        position = "attention"  # no face: the most interesting region, as thumbor falls back to features
    return smart_window(preview(PREVIEW_SIDE), size, w, h, position)


def crop(image: pyvips.Image, w: int, h: int, position: str, ctx: Any) -> pyvips.Image:
    """Crop ``image`` to w x h (each at most the image's side) at ``position``."""
    size = (image.width, image.height)
    w, h = min(w, size[0]), min(h, size[1])
    if (w, h) == size:
        return image
    left, top = decide(lambda side: preview_vips(image, side), size, w, h, position, ctx)
    if ctx is not None:
        ctx.narrow(left, top, w, h, size)
    return image.crop(left, top, w, h)


def crop_array(xp: Any, img: Any, w: int, h: int, position: str, ctx: Any) -> Any:
    """The array executor's crop of (H, W, C) ``img`` to w x h at ``position``."""
    size = (int(img.shape[1]), int(img.shape[0]))
    w, h = min(w, size[0]), min(h, size[1])
    if (w, h) == size:
        return img
    left, top = decide(lambda side: preview_array(xp, img, side), size, w, h, position, ctx)
    if ctx is not None:
        ctx.narrow(left, top, w, h, size)
    return img[top : top + h, left : left + w]


@functools.cache
def _classifier() -> Any:
    try:
        import cv2
    except ImportError:
        raise InternalError(
            "the 'faces' position needs OpenCV: pip install 'imgworker[faces]' (opencv-python-headless)"
        ) from None
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), "haarcascade_frontalface_default.xml")
    if not hasattr(cv2, "CascadeClassifier") or not os.path.exists(path):
        raise InternalError(
            f"OpenCV {cv2.__version__} has no Haar face cascade; install opencv-python-headless>=4.9,<5 "
            "(the [faces] extra), which ships cv2.data.haarcascades"
        )
    return cv2.CascadeClassifier(path)


def face_box(preview: pyvips.Image, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, width, height) of every face found on ``preview``, in the pixels of the image
    of ``size`` it previews; None if none."""
    _classifier()  # the error naming the extra comes before any work
    grey = preview.colourspace("b-w")[0].cast("uchar") if preview.bands >= 3 else preview[0]
    pixels = np.ndarray(buffer=grey.write_to_memory(), dtype=np.uint8, shape=(grey.height, grey.width))
    return _detect(pixels, preview.width / size[0])


def _detect(pixels: Any, scale: float) -> tuple[int, int, int, int] | None:
    """Haar cascade on a grey uint8 host array; the box scaled back by 1 / ``scale``."""
    faces = _classifier().detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x0 = min(int(f[0]) for f in faces)
    y0 = min(int(f[1]) for f in faces)
    x1 = max(int(f[0] + f[2]) for f in faces)
    y1 = max(int(f[1] + f[3]) for f in faces)
    return (round(x0 / scale), round(y0 / scale), round((x1 - x0) / scale), round((y1 - y0) / scale))
