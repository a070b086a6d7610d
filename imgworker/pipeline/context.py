"""What a pipeline runs with: the job (JobContext: request, stores, backend, deadline, timings, reads and
writes) and, per step, what a step may see besides its image (StepContext: the focal point, metadata to keep,
and which part of the source the image shows: ``view``, smart crops are decided on the source, gravity.py).

JobContext lives here, below jobs/, because every runner (the YAML pipelines' here, the built-in ones in
jobs/builtin.py) takes one; jobs/service.py makes one per job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgworker.backends.base import Backend
from imgworker.core.contract import JobRequest
from imgworker.core.deadline import Deadline
from imgworker.core.errors import BadRequest
from imgworker.core.formats import content_type
from imgworker.core.limits import Limits
from imgworker.stores import Stores, WriteOptions
from imgworker.stores.file import url_to_path


class PipelineRunner(Protocol):
    """A named pipeline (imgworker.pipeline) as the service sees it."""

    name: str

    def run(self, ctx: JobContext) -> dict[str, Any]: ...


@dataclass
class JobContext:
    request: JobRequest
    stores: Stores
    backend: Backend
    limits: Limits
    deadline: Deadline
    timings: dict[str, float] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)  # destinations known not to be the source

    def narrow(self, limit_s: float) -> None:
        """A pipeline's own ``timeout`` shortens the job's one deadline, writes included."""
        self.deadline = self.deadline.narrowed(limit_s)

    def check_deadline(self, stage: str) -> None:
        self.deadline.check(stage)

    def read_source(self) -> bytes:
        t0 = time.perf_counter()
        store = self.stores.for_url(self.request.src)
        data = store.read(self.request.src, max_bytes=self.limits.max_source_bytes)
        self.timings["read"] = self.timings.get("read", 0.0) + (time.perf_counter() - t0) * 1000
        return data

    def refuse_overwriting_source(self, url: str) -> None:
        """BAD_REQUEST when ``url`` is the job's source (checked once per URL: early for a known dst, else at
        its write)."""
        if url not in self.checked:
            refuse_overwriting_source(self.request.src, url)
            self.checked.add(url)

    def write(self, url: str, data: bytes, fmt: str, **options: Any) -> None:
        self.check_deadline("write")
        self.refuse_overwriting_source(url)
        t0 = time.perf_counter()
        store = self.stores.for_url(url)
        store.write(url, data, WriteOptions(content_type=content_type(fmt), **options))
        self.timings["write"] = self.timings.get("write", 0.0) + (time.perf_counter() - t0) * 1000


def same_object(a: str, b: str) -> bool:
    if a.startswith("file:") and b.startswith("file:"):
        try:
            return os.path.realpath(url_to_path(a)) == os.path.realpath(url_to_path(b))
        except (BadRequest, OSError, ValueError):
            return False
    return a == b


def refuse_overwriting_source(src: str, dst: str) -> None:
    if same_object(src, dst):
        raise BadRequest(f"dst {dst[:300]!r} is the source itself: the source is never modified; write elsewhere")


FULL = (0.0, 0.0, 1.0, 1.0)
# Steps after which the image still shows the same part of the source (pixel steps; their effect on content is
# not in the source preview: a smart crop after them is decided on the source's content). ``resize`` and
# ``crop`` narrow the view themselves (``narrow``); any other step (extract, extend, rotate, flip, trim) ends it.
KEEPS_VIEW = frozenset({"auto_orient", "blur", "colour", "flatten", "grayscale", "metadata", "modulate", "sharpen",
                        "watermark", "encode", "resize", "crop"})


@dataclass
class StepContext:
    limits: Limits
    deadline: Deadline  # the job's (JobContext.deadline, narrowed by the pipeline's timeout)
    job: JobContext | None = None
    focal: tuple[float, float] | None = None
    # Metadata the encoder keeps (set by the metadata step): exif, icc, xmp, iptc ("copyright" keeps exif).
    keep: tuple[str, ...] = ()
    # Per-job cache (a watermark read once for all outputs).
    cache: dict[str, Any] = field(default_factory=dict)
    # Array executor only: EXIF orientation still to apply, and the GPU's resize kernels (None: NumPy).
    orientation: int = 1
    kernels: Any = None
    # The decoder's loader images (pipeline/decode.py): killed at the deadline with each evaluation.
    loaded: list[Any] = field(default_factory=list)
    # The source's bytes and whether the job orients it: smart crops are decided on a libvips preview of it, the
    # same on every worker (gravity.source_preview). ``view``: the part of that (oriented) source the current
    # image shows, as fractions (left, top, right, bottom); None once a step made it something else.
    source: bytes | None = None
    orient: bool = True
    view: tuple[float, float, float, float] | None = None

    def before(self, step: str) -> None:
        """Called by both executors' step loops before each step."""
        if step not in KEEPS_VIEW:
            self.view = None

    def narrow(self, left: int, top: int, w: int, h: int, size: tuple[int, int]) -> None:
        """The current image (of ``size``) is cut to this window: the view follows."""
        if self.view is None:
            return
        x0, y0, x1, y1 = self.view
        sx, sy = (x1 - x0) / size[0], (y1 - y0) / size[1]
        self.view = (x0 + left * sx, y0 + top * sy, x0 + (left + w) * sx, y0 + (top + h) * sy)

    def check_deadline(self, stage: str) -> None:
        self.deadline.check(stage)

    def read(self, url: str) -> bytes:
        """Read an extra input (a watermark) through the job's stores, with the same access checks as src."""
        if url in self.cache:
            return bytes(self.cache[url])
        if self.job is None:
            raise RuntimeError("no job: cannot read " + url)
        store = self.job.stores.for_url(url)
        store.check(url)
        data = store.read(url, max_bytes=self.limits.max_source_bytes)
        self.cache[url] = data
        return data
