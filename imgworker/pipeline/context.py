"""What a step may see besides its image: the job (stores, deadline), the focal point, metadata to keep, and
which part of the source the image shows (``view``: smart crops are decided on the source, gravity.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgworker.arrays.deadline import check as check_deadline
from imgworker.core.limits import Limits

if TYPE_CHECKING:
    from imgworker.jobs.service import JobContext

FULL = (0.0, 0.0, 1.0, 1.0)
# Steps after which the image still shows the same part of the source (pixel steps; their effect on content is
# not in the source preview: a smart crop after them is decided on the source's content). ``resize`` and
# ``crop`` narrow the view themselves (``narrow``); any other step (extract, extend, rotate, flip, trim) ends it.
KEEPS_VIEW = frozenset({"auto_orient", "blur", "colour", "flatten", "grayscale", "metadata", "modulate", "sharpen",
                        "watermark", "encode", "resize", "crop"})


@dataclass
class StepContext:
    limits: Limits
    deadline: float
    timeout_s: float
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
        check_deadline(self.deadline, self.timeout_s, stage)

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
