"""What both executors of a pipeline job share (run.py: vips, array_run.py: array): the one decode
(``Decoding``, ``decode_cpu``), the outputs (``Output``), and each output's encode and write (``encode_output``,
``store``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyvips

from imgworker import analysis
from imgworker.pipeline import decode as decoder
from imgworker.pipeline import frames, naming
from imgworker.pipeline.context import JobContext, StepContext
from imgworker.pipeline.steps import STEPS, StepDef
from imgworker.pipeline.steps.encode import encode

Resolved = tuple[StepDef, dict[str, Any]]


@dataclass
class Output:
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


def decode_cpu(ctx: JobContext, sctx: StepContext, job: Decoding, facts: bool = True) -> tuple[pyvips.Image, Any]:
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


def encode_output(ctx: JobContext, sctx: StepContext, image: pyvips.Image, enc: dict[str, Any],
                  name: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    sctx.check_deadline("encode")
    t0 = time.perf_counter()
    data, fields = encode(image, enc, sctx)
    ctx.timings["encode"] = ctx.timings.get("encode", 0.0) + (time.perf_counter() - t0) * 1000
    width, height = encoded_size(image, enc["format"])
    return store(ctx, data, width, height, enc, name, fields)


def store(ctx: JobContext, data: bytes, width: int, height: int, enc: dict[str, Any],
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
    return STEPS["resize"]
