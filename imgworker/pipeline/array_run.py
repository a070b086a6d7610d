"""The array executor's job side (gpu and numpy workers): where a pipeline job decodes and encodes.

Decode: a JPEG the GPU decode policy accepts (``decode_route``: the backend's ``gpu_decode_route``, the same
rule as a plain ``resize@gpu``) is not decoded here: the job submits its bytes (device_io.ArrayWork) and the
array batch decodes all such JPEGs of the batch in one device decoder call, at full size, EXIF orientation
applied on the device. Any other source (PNG, WebP, progressive, CMYK, ICC, truncated ...) is decoded by
libvips on this thread (shrink-on-load, sRGB) and uploaded, with the policy's reason in the job's timings
(``decode_routed_cpu_<reason>``). A JPEG the device decoder refuses is decoded by libvips here and run again
(``decode_gpu_refused``): the batch never waits for a CPU decode, and the job is never lost.

Encode: each JPEG output the GPU encoder can honour (device_io.jpeg_refusal) is encoded on the device from the
device image, all of the job's in one call (``encode_gpu``); the others, and any the encoder fails, are
downloaded and encoded by libvips on this thread, as the vips executor does (``encode_routed_cpu_<reason>``,
``encode_gpu_failed``). Either way an output's result entry is the same: dst, width, height, format, bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pyvips

from imgworker.analysis import needs_pixels
from imgworker.analysis.source import facts_of_source
from imgworker.arrays import device_io
from imgworker.arrays import executor as array_executor
from imgworker.arrays import image as arrays
from imgworker.backends.base import array_backend
from imgworker.core.formats import DEFAULT_QUALITY
from imgworker.imaging.colour import to_srgb
from imgworker.imaging.load import shrink_on_load
from imgworker.pipeline import decode as decoder
from imgworker.pipeline import frames
from imgworker.pipeline.context import JobContext, StepContext
from imgworker.pipeline.outputs import Decoding, Output, Resolved, decode_cpu, encode_output, resize_def, store
from imgworker.pipeline.steps.colour import STEP as COLOUR
from imgworker.pipeline.steps.watermark import STEP as WATERMARK

log = logging.getLogger("imgworker.pipeline")


@dataclass
class _Done:
    """One output after the batch: device-encoded bytes per encode (None: the CPU encodes it from ``host``)."""

    img: Any
    page_height: int | None
    keep: tuple[str, ...]
    encoded: list[bytes | None]
    width: int = 0
    height: int = 0
    host: Any = None


def decode_route(ctx: JobContext, job: Decoding) -> str | None:
    """None: decode on the device in the job's array batch; "off": not wanted here (no device decoder, not a
    JPEG, an animation); else why the policy keeps this source on the CPU."""
    backend = array_backend(ctx.backend)
    if backend.device_decoder is None or job.head.loader != "jpeg" or job.animated:
        return "off"
    if needs_pixels(job.facts) and not job.orient:
        return "analysis of the unoriented image"  # facts_of_source reads an oriented thumbnail
    w, h = job.head.shown(job.orient)
    shrink = shrink_on_load(w, h, *job.size) if job.size else 1  # the CPU decode's shrink-on-load for this job
    why = backend.gpu_decode_route(job.head.loader, shrink, job.source)
    return None if why is None else str(why)


def run_array(pipeline: str, ctx: JobContext, sctx: StepContext, job: Decoding, shared: list[Resolved],
              outputs: list[Output], names: list[tuple[str, dict[str, Any]]]) -> tuple[list[dict[str, Any]], Any]:
    """The job on the array executor: (result entries, analysis facts or None)."""
    route = decode_route(ctx, job)
    if route is None:
        # The facts come from one small libvips decode, as a resize job's do on the GPU (builtin.py).
        found = facts_of_source(job.source, job.facts, ctx.limits, job.fail_on, ctx.timings) if job.facts else None
        jpeg = device_io.DeviceJpeg(job.source, job.head.orientation if job.orient else 1, ctx.timings)
        try:
            return _run(pipeline, ctx, sctx, job, None, jpeg, shared, outputs, names), found
        except device_io.GpuDecodeRefused as exc:
            log.debug("pipeline %s: device decode refused (%s); libvips decodes it", pipeline, exc)
            ctx.timings.pop("decode_gpu", None)
            ctx.timings["decode_gpu_refused"] = 1.0
            image, _ = decode_cpu(ctx, sctx, job, facts=False)  # DECODE_FAILED here, as on the CPU path
            return _run(pipeline, ctx, sctx, job, image, None, shared, outputs, names), found
    if route != "off":
        log.debug("pipeline %s: source decoded on the CPU: %s", pipeline, route)
        ctx.timings["decode_routed_cpu"] = 1.0
        ctx.timings[device_io.reason_key("decode_routed_cpu", route)] = 1.0
    image, found = decode_cpu(ctx, sctx, job)
    return _run(pipeline, ctx, sctx, job, image, None, shared, outputs, names), found


def _host_pixels(image: pyvips.Image, shared: list[Resolved], sctx: StepContext) -> tuple[Any, int | None]:
    """The CPU-decoded image as 8-bit sRGB or grey host pixels, and its frame height (animations)."""
    keep_profile = any(step is COLOUR and o["profile"] == "keep" for step, o in shared)
    # The array executor's pixels are 8-bit sRGB or grey: ICC / CMYK / 16-bit conversions happen here, on
    # the CPU, with the colour step's code (colour: keep keeps 8-bit RGB as it is, profile attached later).
    as_is = image.format == "uchar" and image.interpretation in ("srgb", "b-w", "rgb")
    pixels = image if as_is and (keep_profile or image.interpretation != "rgb") else to_srgb(image, "any")
    page_height = frames.page_height(pixels) if frames.is_animated(pixels) else None
    return arrays.from_vips(decoder.materialise(pixels, sctx, "decode")), page_height


def _run(pipeline: str, ctx: JobContext, sctx: StepContext, job: Decoding, image: pyvips.Image | None,
         jpeg: device_io.DeviceJpeg | None, shared: list[Resolved], outputs: list[Output],
         names: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every step on the backend's array module (one batcher call), then the writes on this thread."""
    backend = array_backend(ctx.backend)
    xp = backend.xp
    host, page_height = _host_pixels(image, shared, sctx) if image is not None else (None, None)
    ctx.timings["decode"] = (time.perf_counter() - job.t0) * 1000  # device decode: header checks; + decode_gpu
    for step, options in shared + [s for out in outputs for s in out.steps]:
        if step is WATERMARK and options["opacity"] > 0:
            sctx.read(options["src"])  # store I/O here, on the job thread, not in the batch
    sctx.kernels = backend.kernels
    encoder = backend.device_encoder
    resize = resize_def()

    def work() -> list[_Done]:
        t1 = time.perf_counter()
        start = jpeg.take(xp) if jpeg is not None else arrays.upload(xp, host)  # type: ignore[arg-type]
        base = array_executor.run_steps(xp, shared, array_executor.Frames(start, page_height), sctx)
        view = sctx.view
        done = []
        for out in outputs:
            sctx.view = view
            steps = ([(resize, out.resize)] if out.resize else []) + out.steps
            res = array_executor.run_steps(xp, steps, base, sctx)
            img = arrays.to_uint8(xp, res.img)
            done.append(_Done(img, res.page_height, sctx.keep, [None] * len(out.encodes),
                              int(img.shape[1]), int(res.page_height or img.shape[0])))
        ctx.timings["array"] = (time.perf_counter() - t1) * 1000
        if encoder is not None:
            _device_encode(ctx, encoder, xp, outputs, done, pipeline)
        for d in done:
            if any(e is None for e in d.encoded):
                d.host = arrays.download(d.img)
            d.img = None  # the device memory goes back before the next job of the batch
        return done

    t1 = time.perf_counter()
    processed: list[_Done] = backend.run_array(device_io.ArrayWork(work, jpeg))
    ctx.timings["queue_and_array"] = (time.perf_counter() - t1) * 1000
    meta = image  # the metadata to_encoder copies (the device path reads the source's header when needed)
    results: list[dict[str, Any]] = []
    for out, d in zip(outputs, processed, strict=True):
        encodable = None
        for enc, data in zip(out.encodes, d.encoded, strict=True):
            name = names[len(results)]
            if data is not None:
                results.append(store(ctx, data, d.width, d.height, enc, name))
                continue
            if encodable is None:
                if meta is None and d.keep:
                    meta = _header_image(job)
                encodable = array_executor.to_encoder(d.host, d.page_height, meta, d.keep, sctx)
            results.append(encode_output(ctx, sctx, encodable, enc, name))
    return results


def _header_image(job: Decoding) -> pyvips.Image:
    """The source's metadata as the CPU decode would have it (lazy: no pixel is decoded)."""
    head = pyvips.Image.new_from_buffer(job.source, "")
    return head.autorot() if job.orient else head  # autorot drops the Orientation tag, as the oriented decode does


def _device_encode(ctx: JobContext, encoder: Any, xp: Any, outputs: list[Output], done: list[_Done],
                   pipeline: str) -> None:
    """Encode the job's GPU-encodable JPEG outputs in one encoder call (on the batch thread, images on device)."""
    wanted: list[tuple[int, int]] = []
    quality: list[int] = []
    progressive: list[bool] = []
    for i, (out, d) in enumerate(zip(outputs, done, strict=True)):
        for k, enc in enumerate(out.encodes):
            if enc["format"] != "jpeg":
                continue
            why = device_io.jpeg_refusal(enc, d.img, d.page_height, d.keep, encoder)
            if why is not None:
                log.debug("pipeline %s: JPEG output %d encoded on the CPU: %s", pipeline, i, why)
                for key in ("encode_routed_cpu", device_io.reason_key("encode_routed_cpu", why)):
                    ctx.timings[key] = ctx.timings.get(key, 0.0) + 1
                continue
            wanted.append((i, k))
            quality.append(int(enc["quality"] or DEFAULT_QUALITY["jpeg"]))
            progressive.append(bool(enc["progressive"]))
    if not wanted:
        return
    datas, ms, error = device_io.encode(encoder, xp, [done[i].img for i, _ in wanted], quality, progressive)
    ctx.timings["encode_gpu"] = ctx.timings.get("encode_gpu", 0.0) + ms
    for (i, k), data in zip(wanted, datas, strict=True):
        if data is None:
            log.debug("pipeline %s: GPU JPEG encode failed (%s); libvips encodes it", pipeline, error or "no data")
            ctx.timings["encode_gpu_failed"] = ctx.timings.get("encode_gpu_failed", 0.0) + 1
        else:
            done[i].encoded[k] = data
            ctx.timings["encode_gpu_outputs"] = ctx.timings.get("encode_gpu_outputs", 0.0) + 1
