"""What a step may see besides its image: the job (stores, deadline), the focal point, metadata to keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgworker.arrays.deadline import check as check_deadline
from imgworker.core.limits import Limits

if TYPE_CHECKING:
    from imgworker.jobs.service import JobContext


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
