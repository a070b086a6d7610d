"""The backend interface: turn source bytes into encoded output bytes.

Backends (cpu: libvips, gpu: CuPy) implement the same small interface and share one contract test suite
(tests/test_backend_contract.py): the same request gives the same image within a tolerance on either.
A backend translates its library's errors into imgworker.core.errors (DecodeFailed, UnsupportedImage, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from imgworker.core.contract import ResizeSpec
from imgworker.core.deadline import Deadline
from imgworker.core.limits import Limits


@dataclass(slots=True)
class Rendered:
    """One encoded output image and what it cost."""

    data: bytes
    width: int
    height: int
    format: str
    # Milliseconds per stage: "decode" (header + decode + process) and "encode".
    timings: dict[str, float] = field(default_factory=dict)
    # The facts the spec's ``analyze`` asked for (imgworker.analysis), when the backend computed them.
    analysis: dict[str, Any] | None = None
    # The output's extra result fields: ``quality: auto``'s quality, score, probes (imaging/quality/search.py).
    fields: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What every caller may use of a backend; nothing else is reached for (no getattr with a default)."""

    name: str  # "cpu", "gpu" or "numpy": the result's ``backend``, metric labels, the function names' @tag
    executor: str  # "vips" or "array": which implementation of each pipeline step runs (pipeline/run.py)
    fail_on: str  # decode strictness (imaging/load.py FAIL_ON), for decodes outside ``resize``

    def resize(self, source: bytes, spec: ResizeSpec, limits: Limits, deadline: Deadline | None = None) -> Rendered:
        """Decode ``source``, auto-orient, convert to sRGB, resize per ``spec`` and encode, stopping at
        ``deadline`` (None: ``limits.job_timeout_s`` from now)."""
        ...


class ArrayBackend(Backend, Protocol):
    """A backend whose ``executor`` is "array" (gpu, numpy): what pipeline/array_run.py uses besides."""

    @property
    def xp(self) -> Any:
        """The array module the steps run on: cupy or numpy."""

    @property
    def kernels(self) -> Any:
        """CuPy resize kernels for the resample step (None: its portable gathers)."""

    @property
    def device_decoder(self) -> Any:
        """The JPEG decoder of pipeline jobs' device decodes (None: every pipeline job decodes on the CPU)."""

    @property
    def device_encoder(self) -> Any:
        """The JPEG encoder of pipeline jobs' device encodes (None: every encode on the CPU)."""

    def gpu_decode_route(self, loader: str, shrink: int, source: bytes) -> str | None:
        """None: decode on the device; "off": not wanted; else why the policy keeps the source on the CPU."""

    def run_array(self, work: Callable[[], Any]) -> Any:
        """Run a job's array stage in the backend's batch; its result, or raises its exception."""


def array_backend(backend: Backend) -> ArrayBackend:
    """``backend`` as the array executor's (its ``executor`` says so); TypeError for any other."""
    if backend.executor != "array":
        raise TypeError(f"the {backend.name} backend has no array executor")
    return backend  # type: ignore[return-value]
