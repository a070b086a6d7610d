"""What a step is: its options (typed, ranged, with defaults) and its two executors.

Every step module defines one ``STEP`` with two implementations, each opening with a no-op guard (a step
whose options change nothing returns its input object itself and costs nothing, as imgproxy's processing/):

- ``vips(image, options, ctx) -> image``: libvips on the CPU (pyvips.Image in and out).
- ``array(xp, img, options, ctx) -> img``: the array executor, written once against an array module ``xp``
  (CuPy on the GPU, NumPy as its reference and for ``--backend numpy``). ``img`` is (H, W, C), C = 1 grey,
  2 grey + alpha, 3 sRGB, 4 sRGB + alpha (alpha last), uint8 or float32 with values 0-255; see
  imgworker/arrays/image.py. A step returns the dtype it was given (float results of a uint8 input are
  rounded) unless documented.

``ctx`` is the job's StepContext (deadline, focal point, metadata to keep, extra inputs such as a watermark).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyvips

# The option kinds live in imgworker/core/options.py (one validation path with resize jobs); steps import them here.
from imgworker.core.options import Opt, OptionError, choice, colour, flag, integer, number
from imgworker.core.options import suggest as hint

__all__ = ["GRAVITIES", "KERNELS", "SMART", "Opt", "OptionError", "StepDef", "choice", "colour", "flag", "hint",
           "integer", "number"]
GRAVITIES = (
    "centre", "north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest",
)
SMART = ("attention", "entropy", "faces", "focal")
KERNELS = ("nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3")


Apply = Callable[[pyvips.Image, Mapping[str, Any], Any], pyvips.Image]
ArrayApply = Callable[[Any, Any, Mapping[str, Any], Any], Any]  # (xp, (H, W, C) array, options, ctx) -> array


@dataclass(frozen=True)
class StepDef:
    name: str
    summary: str
    options: Mapping[str, Opt]
    apply: Apply  # the vips executor (also ``.vips``)
    array: ArrayApply | None = None  # the array executor; None: a gpu/numpy worker refuses the step at load
    # Which backends may serve a pipeline using this step (gpu and numpy run ``array``).
    backends: tuple[str, ...] = ("cpu", "gpu")
    # Gives the same result before or after a resize: the decoder may shrink-on-load across it.
    scale_invariant: bool = False
    # Pixel-local: safe on an animation's whole frame strip (otherwise the runner maps it per frame).
    per_pixel: bool = False
    # The option a bare scalar sets: ``- blur: 2`` means ``- blur: {sigma: 2}``.
    shorthand: str | None = None
    # Why a gpu worker cannot run these particular options (None: it can).
    gpu_refuses: Callable[[Mapping[str, Any]], str | None] | None = field(default=None)

    @property
    def vips(self) -> Apply:
        return self.apply

    def defaults(self) -> dict[str, Any]:
        return {k: o.default for k, o in self.options.items() if not o.required}
