"""The CPU backend: libvips through pyvips.

``thumbnail`` does the heavy lifting: shrink-on-load (a JPEG decodes at 1/2, 1/4 or 1/8 scale when the output
is small enough), EXIF auto-orientation and colour management to sRGB (CMYK with its embedded profile, 16-bit
inputs) in one streaming pass. Decode strictness is ``fail_on`` (default ``warning``: a truncated or corrupt
file fails with DECODE_FAILED instead of producing grey or garbage; ``truncated`` is the lenient choice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyvips

from imgworker import analysis
from imgworker.arrays.encode import PLAIN, save
from imgworker.arrays.orientation import SWAPS_SIDES, shown
from imgworker.backends.base import Rendered
from imgworker.core.contract import ResizeSpec
from imgworker.core.errors import DecodeFailed, ImgworkerError, JobTimeout, LimitExceeded, UnsupportedImage
from imgworker.core.formats import RESIZE_FORMATS, SOURCE_LOADERS, SOURCE_NAMES
from imgworker.core.geometry import Geometry, plan
from imgworker.core.limits import Limits
from imgworker.imaging import heif, jpeg_fast
from imgworker.imaging.kill import kill_at
from imgworker.worker import budget

FAIL_ON = ("none", "truncated", "error", "warning")
NO_SHRINK_ON_LOAD = ("png", "tiff", "gif")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    width: int  # as displayed, after EXIF orientation
    height: int
    loader: str
    pages: int
    has_alpha: bool
    orientation: int = 1
    cmyk: bool = False
    # For the memory estimate (budget.py): how the loader will decode it.
    bands: int = 3
    bytes_per_sample: int = 1
    interlaced: bool = False  # interlaced PNG or progressive JPEG: decoded whole


def _translate(exc: pyvips.Error, what: str) -> ImgworkerError:
    text = f"{exc.message} {exc.detail}".strip()
    # pyvips raises "unable to load from buffer" itself when no loader matches; check that first, because
    # ``detail`` is libvips' process-wide error buffer, which a failing job in another thread may have emptied.
    unsupported = exc.message.startswith("unable to load from")
    if unsupported or "not in a known format" in text or "not a known file format" in text:
        return UnsupportedImage(f"{what} is not an image in a supported format ({SOURCE_NAMES})")
    detail = " ".join(line.strip() for line in exc.detail.splitlines() if line.strip())[:300]
    return DecodeFailed(f"{what} could not be decoded: {detail or exc.message}")


def probe(source: bytes, limits: Limits) -> SourceInfo:
    """Header-only open (~ms): refuse bombs before any pixel is decoded."""
    if not source:
        raise UnsupportedImage("source is empty (0 bytes)")
    if heif.handles(source):  # HEVC HEIF: libvips' wheel cannot decode it; pillow-heif reads the header
        h = heif.probe(source, limits)
        budget.charge(budget.estimate(width=h.width, height=h.height, bands=4 if h.has_alpha else 3,
                                      bytes_per_sample=1, loader=heif.LOADER, whole=True, out_width=0,
                                      out_height=0, fmt="jpeg", source_bytes=len(source)))
        return SourceInfo(h.width, h.height, heif.LOADER, h.pages, h.has_alpha)
    frame = jpeg_fast.fast_header(source)
    if frame is not None:  # a JPEG the fast path decodes: its markers are all the header check needs
        return _fast_jpeg_info(frame, limits, len(source))
    try:
        image = pyvips.Image.new_from_buffer(source, "", access="sequential")
        fields = set(image.get_fields())
        orientation = image.get("orientation") if "orientation" in fields else 1
        pages = image.get("n-pages") if "n-pages" in fields else 1
        loader = image.get("vips-loader")
    except pyvips.Error as exc:
        raise _translate(exc, "source") from None
    loader = loader.replace("load_buffer", "").replace("load_source", "").replace("load", "")
    if loader not in SOURCE_LOADERS:
        # libvips also decodes SVG (librsvg: filter graphs whose cost no header bounds), PDF, FITS, Matlab,
        # ImageMagick's dozens of formats...: each is attack surface, and a job carries photos.
        raise UnsupportedImage(f"source is {loader.upper()}, which this worker does not accept; "
                               "use JPEG, PNG, WebP, AVIF/HEIF, GIF or TIFF")
    width, height = shown(image.width, image.height, orientation)
    if width * height > limits.max_source_pixels:
        raise LimitExceeded(
            f"source is {width}x{height} = {width * height} pixels; the limit is {limits.max_source_pixels}"
        )
    cmyk = image.interpretation == "cmyk"
    interlaced = bool(image.get("interlaced")) if "interlaced" in fields else False
    sample = 2 if image.format in ("ushort", "short") else 4 if image.format in ("float", "uint", "int") else 1
    info = SourceInfo(width, height, loader, pages, image.hasalpha(), orientation, cmyk, image.bands, sample,
                      interlaced)
    # The decode's memory, admitted against the process budget for the rest of the job (waits or refuses).
    budget.charge(budget.estimate(width=width, height=height, bands=image.bands, bytes_per_sample=sample,
                                  loader=loader, whole=interlaced, out_width=0, out_height=0, fmt="jpeg",
                                  source_bytes=len(source)))
    return info


def output_cost(info: SourceInfo, out_width: int, out_height: int, fmt: str) -> budget.Cost:
    """What the output and its encoder hold (the decode was charged by probe)."""
    return budget.estimate(width=0, height=0, bands=info.bands, bytes_per_sample=1, loader=info.loader,
                           whole=False, out_width=out_width, out_height=out_height, fmt=fmt)


def evaluate(image: pyvips.Image, deadline: float, stage: str = "decode",
             watched: list[Any] | None = None) -> pyvips.Image:
    """``image`` computed into memory, stopped at ``deadline`` (time.monotonic()) with JobTimeout: libvips'
    kill flag is set on ``image`` and on every image in ``watched`` (the loader's, which does the work)."""
    with kill_at(deadline, image, *(watched or ())):
        try:
            return image.copy_memory()
        except pyvips.Error as exc:
            if time.monotonic() > deadline:
                raise JobTimeout(f"job passed its time limit during {stage}") from None
            raise _translate(exc, "source") from None


def _fast_jpeg_info(frame: jpeg_fast.Frame, limits: Limits, source_bytes: int) -> SourceInfo:
    """The header check from the JPEG markers alone (no libvips header open): the same limits as below."""
    width, height = shown(frame.width, frame.height, frame.orientation)
    if width * height > limits.max_source_pixels:
        raise LimitExceeded(
            f"source is {width}x{height} = {width * height} pixels; the limit is {limits.max_source_pixels}"
        )
    progressive = frame.sof == 0xC2  # libvips' "interlaced": the decoder holds every coefficient at once
    info = SourceInfo(width, height, "jpeg", 1, False, frame.orientation, False, frame.components, 1, progressive)
    budget.charge(budget.estimate(width=width, height=height, bands=frame.components, bytes_per_sample=1,
                                  loader="jpeg", whole=progressive, out_width=0, out_height=0, fmt="jpeg",
                                  source_bytes=source_bytes))
    return info


def encode(image: pyvips.Image, fmt: str, quality: int, background: tuple[int, int, int]) -> bytes:
    if fmt == "jpeg" and image.hasalpha():
        image = image.flatten(background=list(background))
    if image.format != "uchar":
        image = image.cast("uchar")
    if fmt not in RESIZE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    try:  # the encode step's encoder at its defaults (engine/encode.py): one encoder for every job
        return save(image, {**PLAIN, "format": fmt}, quality, keep=0)
    except pyvips.Error as exc:
        raise _translate(exc, "output") from None


def jpeg_shrink(src_w: int, src_h: int, out_w: int, out_h: int) -> int:
    """The biggest JPEG shrink-on-load (8, 4, 2) that still decodes at least the output size.

    libvips' thumbnail keeps a factor of 2 above the target (a 20 MP photo to 512 px decodes at 1/4, to
    2048 px at full size); like sharp's default ``fastShrinkOnLoad`` we decode at the smallest scale that
    is still no smaller than the output, and let the reduce kernel do the rest: 2-4x less decode work.
    """
    factor = min(src_w / out_w, src_h / out_h)
    return next((s for s in (8, 4, 2) if factor >= s), 1)


def load_jpeg_resized(source: bytes, shown: tuple[int, int], size: tuple[int, int], *, fail_on: str,
                      cmyk: bool = False, orientation: int = 1, rotate: bool = True,
                      loaded: list[Any] | None = None, metadata: bool = False) -> pyvips.Image:
    """A JPEG resampled (lanczos3) to ``size``, decoded at the smallest DCT scale (``jpeg_shrink``) that covers it.

    ``shown`` is the source's size as ``size`` is meant (displayed when ``rotate``); like ``thumbnail``, CMYK
    comes out sRGB (embedded profile, else a generic CMYK one) and other colour spaces as they are. Raises
    pyvips.Error; errors in the pixels surface when the result is evaluated. ``metadata``: the output keeps
    EXIF/XMP/IPTC, which only libvips' jpegload parses (the fast path carries the ICC profile and orientation).
    """
    shrink = jpeg_shrink(shown[0], shown[1], size[0], size[1])
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


def to_srgb8(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (or 8-bit grey), whatever came out of the loader."""
    if image.interpretation in ("b-w", "grey16"):
        return image.colourspace("b-w") if image.interpretation == "grey16" else image
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    return image


def pad(image: pyvips.Image, geo: Geometry, background: tuple[int, int, int]) -> pyvips.Image:
    """``image`` centred on ``geo``'s final size over ``background`` (opaque where there is alpha): the
    ``contain`` pad of plain resize jobs and of the pipeline resize step."""
    bg: list[float] = list(background) if image.bands >= 3 else [float(background[0])]
    if image.hasalpha():
        bg.append(255.0)
    return image.embed(geo.pad_left, geo.pad_top, geo.final_w, geo.final_h, extend="background", background=bg)


def apply_geometry(image: pyvips.Image, geo: Geometry, background: tuple[int, int, int]) -> pyvips.Image:
    if geo.crops:
        return image.crop(geo.crop_left, geo.crop_top, geo.final_w, geo.final_h)
    if geo.pads:
        return pad(image, geo, background)
    return image


class CpuBackend:
    name = "cpu"
    executor = "vips"  # pipelines run every step's libvips implementation (imgworker/pipeline/run.py)

    def __init__(self, fail_on: str = "warning") -> None:
        if fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)}")
        self.fail_on = fail_on

    def thumbnail(self, source: bytes, geo: Geometry, **options: Any) -> pyvips.Image:
        try:
            return pyvips.Image.thumbnail_buffer(
                source,
                geo.resize_w,
                height=geo.resize_h,
                size="force",
                option_string=f"fail_on={self.fail_on}",
                **options,
            )
        except pyvips.Error as exc:
            raise _translate(exc, "source") from None

    def load_resized(self, source: bytes, info: SourceInfo, geo: Geometry,
                     loaded: list[Any] | None = None) -> pyvips.Image:
        """The source at ``geo``'s resize size, oriented, 8-bit sRGB; JPEGs decode at the smallest scale.
        The loader's image is appended to ``loaded`` where there is one to reach (for kill_at)."""
        if info.loader in NO_SHRINK_ON_LOAD and loaded is not None:
            # These loaders have no shrink-on-load, so thumbnail_image does what thumbnail_buffer would, and
            # the loader's image, the one doing the work, can be killed at the deadline.
            try:
                src = pyvips.Image.new_from_buffer(source, "", access="sequential", fail_on=self.fail_on)
                loaded.append(src)
                return to_srgb8(src.thumbnail_image(geo.resize_w, height=geo.resize_h, size="force"))
            except pyvips.Error as exc:
                raise _translate(exc, "source") from None
        if info.loader == heif.LOADER:
            return to_srgb8(heif.resized(source, (geo.resize_w, geo.resize_h)))
        if info.loader != "jpeg" or info.pages > 1:
            return to_srgb8(self.thumbnail(source, geo))
        try:
            return to_srgb8(load_jpeg_resized(source, (info.width, info.height), (geo.resize_w, geo.resize_h),
                                              fail_on=self.fail_on, cmyk=info.cmyk, orientation=info.orientation,
                                              loaded=loaded))
        except pyvips.Error as exc:
            raise _translate(exc, "source") from None

    def resize(self, source: bytes, spec: ResizeSpec, limits: Limits) -> Rendered:
        t0 = time.perf_counter()
        info = probe(source, limits)
        geo = plan(info.width, info.height, spec.width, spec.height, spec.fit, limits)
        budget.charge(output_cost(info, geo.final_w, geo.final_h, spec.format))
        loaded: list[Any] = []
        image = self.load_resized(source, info, geo, loaded)
        # Computed into memory so decode errors surface here and stage timings are honest; the job's time limit
        # (what is left of it: Service passes the remaining time) stops libvips mid-decode.
        deadline = time.monotonic() + limits.job_timeout_s
        timings: dict[str, float] = {}
        facts = None
        if spec.analyze:  # from the resized pixels, before crop or pad: decoded once, into memory
            image = evaluate(image, deadline, watched=loaded)
            try:
                facts = analysis.of_decoded(image, source, spec.analyze, timings=timings)
            except pyvips.Error as exc:
                raise _translate(exc, "source") from None
        image = apply_geometry(image, geo, spec.background)
        image = evaluate(image, deadline, watched=loaded)
        t1 = time.perf_counter()
        data = encode(image, spec.format, spec.quality, spec.background)
        t2 = time.perf_counter()
        return Rendered(
            data=data,
            width=image.width,
            height=image.height,
            format=spec.format,
            timings={"decode": (t1 - t0) * 1000, "encode": (t2 - t1) * 1000, **timings},
            analysis=facts,
        )
