"""The backend interface: turn source bytes into encoded output bytes.

Backends (cpu: libvips, gpu: CuPy) implement the same small interface and share one contract test suite
(tests/test_backend_contract.py): the same request gives the same image within a tolerance on either.
A backend translates its library's errors into imgworker.core.errors (DecodeFailed, UnsupportedImage, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from imgworker.core.contract import ResizeSpec
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
    name: str

    def resize(self, source: bytes, spec: ResizeSpec, limits: Limits) -> Rendered:
        """Decode ``source``, auto-orient, convert to sRGB, resize per ``spec`` and encode."""
        ...
