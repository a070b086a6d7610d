"""Run one pipeline job: resolve parameters, decode once, shared steps, then each output; deadline checked
between steps (and inside libvips evaluations, see decode.materialise).

Two executors: ``vips`` (CPU workers: every step's libvips implementation) and ``array`` (gpu and numpy
workers: the backend's array module through its batcher, imgworker/arrays/executor.py; the job side, with
its device JPEG decode/encode routing, is pipeline/array_run.py). Which one is the backend's ``executor``
attribute; both share the plan, the one decode, the names, the encoder and the writes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyvips

from imgworker import analysis
from imgworker.core import budget
from imgworker.core.errors import BadRequest
from imgworker.core.formats import EXTENSIONS
from imgworker.pipeline import decode as decoder
from imgworker.pipeline import frames, naming
from imgworker.pipeline.array_run import run_array
from imgworker.pipeline.context import FULL, JobContext, StepContext
from imgworker.pipeline.model import Pipeline
from imgworker.pipeline.outputs import Decoding, Output, Resolved, decode_cpu, encode_output, resize_def
from imgworker.pipeline.steps import StepDef
from imgworker.pipeline.steps.auto_orient import STEP as AUTO_ORIENT
from imgworker.pipeline.steps.encode import validate as validate_encode

log = logging.getLogger("imgworker.pipeline")


def apply(image: pyvips.Image, step: StepDef, options: dict[str, Any], ctx: StepContext) -> pyvips.Image:
    if step.per_pixel:
        return step.apply(image, options, ctx)
    return frames.map_frames(image, lambda frame: step.apply(frame, options, ctx))


class Runner:
    """A loaded pipeline as the service runs it (imgworker.pipeline.context.PipelineRunner)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name

    def _resolve(self, ctx: JobContext) -> tuple[StepContext, list[Resolved], list[Output]]:
        p = self.pipeline
        values, focal = p.resolve_params(ctx.request.overrides)
        if p.timeout:
            ctx.narrow(p.timeout)  # one deadline: the job's writes keep the pipeline's timeout too
        sctx = StepContext(ctx.limits, ctx.deadline, ctx, focal)
        shared = [(s.step, s.resolve(values, p.name)) for s in p.steps]
        outputs = [
            Output(
                o.resize.resolve(values, p.name) if o.resize else None,
                [(s.step, s.resolve(values, p.name)) for s in o.steps],
                [e.resolve(values, p.name) for e in o.encodes],
                o.label,
            )
            for o in p.outputs
        ]
        for out in outputs:
            for enc in out.encodes:
                validate_encode(enc)  # a job's format and quality together (quality: auto is lossy only)
        return sctx, shared, outputs

    def _names(self, ctx: JobContext, outputs: list[Output]) -> list[tuple[str, dict[str, Any]]]:
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
        every = shared + [s for o in outputs for s in o.steps]
        metadata = any(step.name == "metadata" and set(o["keep"]) - {"icc"} for step, o in every)
        facts = analysis.merge(p.analyze, ctx.request.analyze)
        job = Decoding(source, head, size, orient, animated, ctx.backend.fail_on,
                       metadata, facts, t0)
        sctx.source, sctx.orient, sctx.view = source, orient, None if animated else FULL
        if ctx.backend.executor == "array":
            results, found = run_array(p.name, ctx, sctx, job, shared, outputs, names)
        else:
            image, found = decode_cpu(ctx, sctx, job)
            results = self._run_vips(ctx, sctx, image, shared, outputs, names, t0)
        first = results[0]
        return {**{k: first[k] for k in ("dst", "width", "height", "format", "bytes")}, "pipeline": p.name,
                "outputs": results, **({"analysis": found} if found is not None else {})}

    def _run_vips(self, ctx: JobContext, sctx: StepContext, image: pyvips.Image, shared: list[Resolved],
                  outputs: list[Output], names: list[tuple[str, dict[str, Any]]], t0: float) -> list[dict[str, Any]]:
        for step, options in shared:
            sctx.check_deadline(step.name)
            sctx.before(step.name)
            image = apply(image, step, options, sctx)
        base, view = decoder.materialise(image, sctx, "processing"), sctx.view
        ctx.timings["decode"] = (time.perf_counter() - t0) * 1000
        results: list[dict[str, Any]] = []
        for out in outputs:
            image, sctx.view = base, view
            steps = ([(resize_def(), out.resize)] if out.resize else []) + out.steps
            for step, options in steps:
                sctx.check_deadline(step.name)
                sctx.before(step.name)
                image = apply(image, step, options, sctx)
            if len(out.encodes) > 1:
                image = decoder.materialise(image, sctx, "processing")  # shared by this size's encodes
            for enc in out.encodes:
                results.append(encode_output(ctx, sctx, image, enc, names[len(results)]))
        return results
