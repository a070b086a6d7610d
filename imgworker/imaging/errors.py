"""libvips' errors as the job's: UNSUPPORTED_IMAGE when no loader takes the bytes, DECODE_FAILED otherwise."""

from __future__ import annotations

import pyvips

from imgworker.core.errors import DecodeFailed, ImgworkerError, UnsupportedImage
from imgworker.core.formats import SOURCE_NAMES


def translate(exc: pyvips.Error, what: str) -> ImgworkerError:
    text = f"{exc.message} {exc.detail}".strip()
    # pyvips raises "unable to load from buffer" itself when no loader matches; check that first, because
    # ``detail`` is libvips' process-wide error buffer, which a failing job in another thread may have emptied.
    unsupported = exc.message.startswith("unable to load from")
    if unsupported or "not in a known format" in text or "not a known file format" in text:
        return UnsupportedImage(f"{what} is not an image in a supported format ({SOURCE_NAMES})")
    detail = " ".join(line.strip() for line in exc.detail.splitlines() if line.strip())[:300]
    return DecodeFailed(f"{what} could not be decoded: {detail or exc.message}")
