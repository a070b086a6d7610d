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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyvips

from imgworker import analysis
from imgworker.core.errors import BadRequest
from imgworker.core.formats import EXTENSIONS
from imgworker.pipeline import decode as decoder
from imgworker.pipeline import frames, naming
from imgworker.pipeline.context import StepContext
from imgworker.pipeline.model import Pipeline
from imgworker.pipeline.steps import StepDef
from imgworker.pipeline.steps.auto_orient import STEP as AUTO_ORIENT
from imgworker.pipeline.steps.encode import encode
from imgworker.pipeline.steps.encode import validate as validate_encode
from imgworker.worker import budget

if TYPE_CHECKING:
    from imgworker.jobs.service import JobContext

log = logging.getLogger("imgworker.pipeline")
Resolved = tuple[StepDef, dict[str, Any]]


@dataclass
class _Output:
    resize: dict[str, Any] | None
    steps: list[Resolved]
    encodes: list[dict[str, Any]]
    label: str | None


@dataclass(frozen=True)
class Decoding:
    """What the job's one decode needs (both executors; the array one may decode on the device instead)."""

    source: bytes
    head: decoder.Header
    size: tuple[int, int] | None
    orient: bool
    animated: bool
    fail_on: str
    metadata: bool
    facts: tuple[str, ...]
    t0: float  # when the header check began: "decode" in the timings counts from here


def apply(image: pyvips.Image, step: StepDef, options: dict[str, Any], ctx: StepContext) -> pyvips.Image:
    if step.per_pixel:
        return step.apply(image, options, ctx)
    return frames.map_frames(image, lambda frame: step.apply(frame, options, ctx))


class Runner:
    """A loaded pipeline as the service runs it (imgworker.jobs.service.PipelineRunner)."""

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
        for out in outputs:
            for enc in out.encodes:
                validate_encode(enc)  # a job's format and quality together (quality: auto is lossy only)
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
        every = shared + [s for o in outputs for s in o.steps]
        metadata = any(step.name == "metadata" and set(o["keep"]) - {"icc"} for step, o in every)
        facts = analysis.merge(p.analyze, ctx.request.analyze)
        job = Decoding(source, head, size, orient, animated, str(getattr(ctx.backend, "fail_on", "warning")),
                       metadata, facts, t0)
        if getattr(ctx.backend, "executor", "vips") == "array":
            from imgworker.pipeline.array_run import (
                run_array,  # the array executor's job side (device decode/encode routing)
            )

            results, found = run_array(self, ctx, sctx, job, shared, outputs, names)
        else:
            image, found = self.decode_cpu(ctx, sctx, job)
            results = self._run_vips(ctx, sctx, image, shared, outputs, names, t0)
        first = results[0]
        return {**{k: first[k] for k in ("dst", "width", "height", "format", "bytes")}, "pipeline": p.name,
                "outputs": results, **({"analysis": found} if found is not None else {})}

    def decode_cpu(self, ctx: JobContext, sctx: StepContext, job: Decoding,
                   facts: bool = True) -> tuple[pyvips.Image, Any]:
        """The job's one libvips decode (shrink-on-load, oriented) and its analysis facts (None if none)."""
        image = decoder.decode(job.source, job.size, fail_on=job.fail_on, orient=job.orient, frames=job.animated,
                               head=job.head, metadata=job.metadata, loaded=sctx.loaded)
        wanted = job.facts if facts else ()
        if job.size is not None or wanted:  # the facts read the decoded image too: decode it once, into memory
            # thumbnail output streams once (sequential); smart crop and faces read it twice: keep it in memory.
            image = decoder.materialise(image, sctx, "decode")
        found = analysis.of_decoded(image, job.source, wanted, oriented=job.orient,
                                    timings=ctx.timings) if wanted else None
        return image, found

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
            steps = ([(resize_def(), out.resize)] if out.resize else []) + out.steps
            for step, options in steps:
                sctx.check_deadline(step.name)
                image = apply(image, step, options, sctx)
            if len(out.encodes) > 1:
                image = decoder.materialise(image, sctx, "processing")  # shared by this size's encodes
            for enc in out.encodes:
                results.append(self.encode_output(ctx, sctx, image, enc, names[len(results)]))
        return results

    def encode_output(self, ctx: JobContext, sctx: StepContext, image: pyvips.Image, enc: dict[str, Any],
                name: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        sctx.check_deadline("encode")
        t0 = time.perf_counter()
        data, fields = encode(image, enc, sctx)
        ctx.timings["encode"] = ctx.timings.get("encode", 0.0) + (time.perf_counter() - t0) * 1000
        width, height = encoded_size(image, enc["format"])
        return self.store(ctx, data, width, height, enc, name, fields)

    def store(self, ctx: JobContext, data: bytes, width: int, height: int, enc: dict[str, Any],
              name: tuple[str, dict[str, Any]], fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write one encoded output under its name: the output's result entry (plus the encoder's ``fields``:
        the quality max_bytes chose, or quality: auto's search)."""
        template, values = name
        values = {**values, "width": values["width"] or width, "height": values["height"] or height}
        url = naming.render(template, values)
        ctx.write(url, data, enc["format"])
        result = {"dst": url, "width": width, "height": height, "format": enc["format"], "bytes": len(data)}
        return {**result, **(fields or {})}


def encoded_size(image: pyvips.Image, fmt: str) -> tuple[int, int]:
    """Width and (frame) height of what was encoded."""
    return image.width, frames.page_height(image)


def resize_def() -> StepDef:
    from imgworker.pipeline.steps import STEPS

    return STEPS["resize"]
