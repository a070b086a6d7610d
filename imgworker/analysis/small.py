"""The small image every pixel fact reads: the job's decoded image brought down to at most 100x100 RGBA
(ThumbHash's limit), plus the 32x32 grey image of the perceptual hash. Both come from the pixels the job
already decoded, by resampling in memory: no second decode of the source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyvips

from .phash import SIZE as PHASH_SIZE
from .thumbhash import MAX_SIDE


@dataclass(frozen=True, slots=True)
class Small:
    rgba: npt.NDArray[np.uint8]  # (h, w, 4), h and w <= 100
    grey32: npt.NDArray[np.float64]  # (32, 32), 0..255

    @property
    def rgb(self) -> npt.NDArray[np.uint8]:
        return self.rgba[..., :3]


def first_frame(image: pyvips.Image) -> pyvips.Image:
    """An animation is decoded as a tall strip of frames: the facts describe the first."""
    fields = image.get_fields()
    page_height = image.get("page-height") if "page-height" in fields else image.height
    return image.crop(0, 0, image.width, page_height) if 0 < page_height < image.height else image


def to_rgba8(image: pyvips.Image) -> pyvips.Image:
    if image.bands < 3 or image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")  # grey, 16-bit, CMYK...: 8-bit sRGB, alpha kept
    if image.format != "uchar":
        image = image.cast("uchar")
    if not image.hasalpha():
        image = image.bandjoin(255)
    return image[0:4] if image.bands > 4 else image


def prepare(image: pyvips.Image, oriented: bool = True) -> Small:
    """``image`` (any colour space, in memory) as the facts' small image; turned upright unless ``oriented``."""
    image = first_frame(image)
    if image.width > MAX_SIDE or image.height > MAX_SIDE:
        image = image.thumbnail_image(MAX_SIDE, height=MAX_SIDE, no_rotate=True)
    if not oriented:
        image = image.autorot()  # the job kept the stored orientation; the facts describe the picture as shown
    image = to_rgba8(image)
    rgba = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, 4))
    # Pillow's "L" conversion (ITU-R 601-2 luma), then a Lanczos resize to 32x32, as imagehash does.
    grey = image[0] * 0.299 + image[1] * 0.587 + image[2] * 0.114
    grey = grey.resize(PHASH_SIZE / grey.width, vscale=PHASH_SIZE / grey.height, kernel="lanczos3")
    if grey.width != PHASH_SIZE or grey.height != PHASH_SIZE:  # rounding at odd sizes
        grey = grey.gravity("north-west", PHASH_SIZE, PHASH_SIZE, extend="copy")
    grey32 = np.ndarray(buffer=grey.cast("double").write_to_memory(), dtype=np.float64,
                        shape=(PHASH_SIZE, PHASH_SIZE))
    return Small(rgba, np.clip(grey32, 0, 255))
