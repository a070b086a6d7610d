"""Run one pipeline job: resolve parameters, decode once, shared steps, then each output; deadline checked
between steps (and inside libvips evaluations, see decode.materialise).

Two executors: ``vips`` (CPU workers: every step's libvips implementation) and ``array`` (gpu and numpy
workers: the backend's array module through its batcher, imgworker/engine/executor.py). Which one is the
backend's ``executor`` attribute; both share the plan, the one decode, the names, the encoder and the writes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyvips

from .. import analysis, budget
from ..engine import arrays
from ..engine import executor as array_executor
from ..errors import BadRequest
from ..formats import EXTENSIONS
from . import decode as decoder
from . import frames, naming
from .context import StepContext
from .model import Pipeline
from .steps import StepDef
from .steps.auto_orient import STEP as AUTO_ORIENT
from .steps.colour import STEP as COLOUR
from .steps.colour import to_srgb
from .steps.encode import encode
from .steps.watermark import STEP as WATERMARK

if TYPE_CHECKING:
    from ..service import JobContext

log = logging.getLogger("imgworker.pipeline")
Resolved = tuple[StepDef, dict[str, Any]]


@dataclass
class _Output:
    resize: dict[str, Any] | None
    steps: list[Resolved]
    encodes: list[dict[str, Any]]
    label: str | None


def apply(image: pyvips.Image, step: StepDef, options: dict[str, Any], ctx: StepContext) -> pyvips.Image:
    if step.per_pixel:
        return step.apply(image, options, ctx)
    return frames.map_frames(image, lambda frame: step.apply(frame, options, ctx))


class Runner:
    """A loaded pipeline as the service runs it (imgworker.service.PipelineRunner)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name

    def _resolve(self, ctx: JobContext) -> tuple[StepContext, list[Resolved], list[_Output]]:
        p = self.pipeline
        values, focal = p.resolve_params(ctx.request.overrides)
        timeout = min(ctx.limits.job_timeout_s, p.timeout or ctx.limits.job_timeout_s)
        started = ctx.deadline - ctx.limits.job_timeout_s
        sctx = StepContext(ctx.limits, min(ctx.deadline, started + timeout), timeout, ctx, focal)
        ctx.narrow(sctx.deadline, timeout)  # one deadline: the job's writes keep the pipeline's timeout too
        shared = [(s.step, s.resolve(values, p.name)) for s in p.steps]
        outputs = [
            _Output(
                o.resize.resolve(values, p.name) if o.resize else None,
                [(s.step, s.resolve(values, p.name)) for s in o.steps],
                [e.resolve(values, p.name) for e in o.encodes],
                o.label,
            )
            for o in p.outputs
        ]
        return sctx, shared, outputs

    def _names(self, ctx: JobContext, outputs: list[_Output]) -> list[tuple[str, dict[str, Any]]]:
        """(template, known values) per encode; checked for access and clashes before any work."""
        count = sum(len(o.encodes) for o in outputs)
        template = naming.template_for(ctx.request.dst, self.pipeline.dst_template, count)
        base = naming.source_names(ctx.request.src)
        planned: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for out in outputs:
            for enc in out.encodes:
                values: dict[str, Any] = {**base, "format": enc["format"], "ext": EXTENSIONS[enc["format"]],
                                          "width": (out.resize or {}).get("width"),
                                          "height": (out.resize or {}).get("height"),
                                          "label": out.label or "", "index": len(planned)}
                url = naming.render(template, {k: ("" if v is None else v) for k, v in values.items()})
                if url in seen:
                    raise BadRequest(f"dst {ctx.request.dst!r} gives two outputs the same name {url!r}: use "
                                     "{width}, {height}, {format} or {ext} to tell them apart")
                seen.add(url)
                ctx.stores.for_url(url).check(url, write=True)
                planned.append((template, values))
        return planned

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = self.pipeline
        sctx, shared, outputs = self._resolve(ctx)
        names = self._names(ctx, outputs)
        source = ctx.read_source()
        t0 = time.perf_counter()
        head = decoder.header(source, ctx.limits)
        orient = any(step is AUTO_ORIENT and o["enabled"] for step, o in shared)
        animated = decoder.animated(head, p.animation == "keep", ctx.limits)
        if animated:
            budget.charge_frames(head.pages, 1 + len(outputs))  # every frame, decoded and per size (budget.py)
        size = decoder.target(head.shown(orient), shared, [o.resize for o in outputs], ctx.limits)
        fail_on = str(getattr(ctx.backend, "fail_on", "warning"))
        every = shared + [s for o in outputs for s in o.steps]
        metadata = any(step.name == "metadata" and set(o["keep"]) - {"icc"} for step, o in every)
        image = decoder.decode(source, size, fail_on=fail_on, orient=orient, frames=animated, head=head,
                               metadata=metadata, loaded=sctx.loaded)
        facts = analysis.merge(p.analyze, ctx.request.analyze)
        if size is not None or facts:  # the facts read the decoded image too: decode it once, into memory
            # thumbnail output streams once (sequential); smart crop and faces read it twice: keep it in memory.
            image = decoder.materialise(image, sctx, "decode")
        found = analysis.of_decoded(image, source, facts, oriented=orient, timings=ctx.timings) if facts else None
        if getattr(ctx.backend, "executor", "vips") == "array":
            results = self._run_array(ctx, sctx, image, shared, outputs, names, t0)
        else:
            results = self._run_vips(ctx, sctx, image, shared, outputs, names, t0)
        first = results[0]
        return {**{k: first[k] for k in ("dst", "width", "height", "format", "bytes")}, "pipeline": p.name,
                "outputs": results, **({"analysis": found} if found is not None else {})}

    def _run_vips(self, ctx: JobContext, sctx: StepContext, image: pyvips.Image, shared: list[Resolved],
                  outputs: list[_Output], names: list[tuple[str, dict[str, Any]]], t0: float) -> list[dict[str, Any]]:
        for step, options in shared:
            sctx.check_deadline(step.name)
            image = apply(image, step, options, sctx)
        base = decoder.materialise(image, sctx, "processing")
        ctx.timings["decode"] = (time.perf_counter() - t0) * 1000
        results: list[dict[str, Any]] = []
        for out in outputs:
            image = base
            steps = ([(_resize_def(), out.resize)] if out.resize else []) + out.steps
            for step, options in steps:
                sctx.check_deadline(step.name)
                image = apply(image, step, options, sctx)
            if len(out.encodes) > 1:
                image = decoder.materialise(image, sctx, "processing")  # shared by this size's encodes
            for enc in out.encodes:
                results.append(self._encode(ctx, sctx, image, enc, names[len(results)]))
        return results

    def _run_array(self, ctx: JobContext, sctx: StepContext, image: pyvips.Image, shared: list[Resolved],
                   outputs: list[_Output], names: list[tuple[str, dict[str, Any]]], t0: float) -> list[dict[str, Any]]:
        """Upload once, every step on the backend's array module (one batcher call), encode on this thread."""
        backend = ctx.backend
        xp = backend.xp  # type: ignore[attr-defined]
        keep_profile = any(step is COLOUR and o["profile"] == "keep" for step, o in shared)
        # The array executor's pixels are 8-bit sRGB or grey: ICC / CMYK / 16-bit conversions happen here, on
        # the CPU, with the colour step's code (colour: keep keeps 8-bit RGB as it is, profile attached later).
        as_is = image.format == "uchar" and image.interpretation in ("srgb", "b-w", "rgb")
        pixels = image if as_is and (keep_profile or image.interpretation != "rgb") else to_srgb(image)
        page_height = frames.page_height(pixels) if frames.is_animated(pixels) else None
        host = arrays.from_vips(decoder.materialise(pixels, sctx, "decode"))
        ctx.timings["decode"] = (time.perf_counter() - t0) * 1000
        for step, options in shared + [s for out in outputs for s in out.steps]:
            if step is WATERMARK and options["opacity"] > 0:
                sctx.read(options["src"])  # store I/O here, on the job thread, not in the batch
        sctx.kernels = getattr(backend, "kernels", None)
        resize = _resize_def()

        def work() -> list[tuple[Any, int | None, tuple[str, ...]]]:
            t1 = time.perf_counter()
            base = array_executor.run_steps(xp, shared, array_executor.Frames(arrays.upload(xp, host),
                                                                              page_height), sctx)
            done = []
            for out in outputs:
                steps = ([(resize, out.resize)] if out.resize else []) + out.steps
                res = array_executor.run_steps(xp, steps, base, sctx)
                done.append((arrays.download(arrays.to_uint8(xp, res.img)), res.page_height, sctx.keep))
            ctx.timings["array"] = (time.perf_counter() - t1) * 1000
            return done

        t1 = time.perf_counter()
        processed = backend.run_array(work)  # type: ignore[attr-defined]
        ctx.timings["queue_and_array"] = (time.perf_counter() - t1) * 1000
        results: list[dict[str, Any]] = []
        for out, (host_out, ph, keep) in zip(outputs, processed, strict=True):
            encoded = array_executor.to_encoder(host_out, ph, image, keep, sctx)
            for enc in out.encodes:
                results.append(self._encode(ctx, sctx, encoded, enc, names[len(results)]))
        return results

    def _encode(self, ctx: JobContext, sctx: StepContext, image: pyvips.Image, enc: dict[str, Any],
                name: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        sctx.check_deadline("encode")
        t0 = time.perf_counter()
        data, quality = encode(image, enc, sctx)
        ctx.timings["encode"] = ctx.timings.get("encode", 0.0) + (time.perf_counter() - t0) * 1000
        out = encoded_size(image, enc["format"])
        template, values = name
        values = {**values, "width": values["width"] or out[0], "height": values["height"] or out[1]}
        url = naming.render(template, values)
        ctx.write(url, data, enc["format"])
        result = {"dst": url, "width": out[0], "height": out[1], "format": enc["format"], "bytes": len(data)}
        if enc["max_bytes"]:
            result["quality"] = quality
        return result


def encoded_size(image: pyvips.Image, fmt: str) -> tuple[int, int]:
    """Width and (frame) height of what was encoded."""
    return image.width, frames.page_height(image)


def _resize_def() -> StepDef:
    from .steps import STEPS

    return STEPS["resize"]
