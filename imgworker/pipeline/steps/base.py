"""What a step is: its options (typed, ranged, with defaults) and its two executors.

Every step module defines one ``STEP`` with two implementations, each opening with a no-op guard (a step
whose options change nothing returns its input object itself and costs nothing, as imgproxy's processing/):

- ``vips(image, options, ctx) -> image``: libvips on the CPU (pyvips.Image in and out).
- ``array(xp, img, options, ctx) -> img``: the array executor, written once against an array module ``xp``
  (CuPy on the GPU, NumPy as its reference and for ``--backend numpy``). ``img`` is (H, W, C), C = 1 grey,
  2 grey + alpha, 3 sRGB, 4 sRGB + alpha (alpha last), uint8 or float32 with values 0-255; see
  imgworker/engine/arrays.py. A step returns the dtype it was given (float results of a uint8 input are
  rounded) unless documented.

``ctx`` is the job's StepContext (deadline, focal point, metadata to keep, extra inputs such as a watermark).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyvips

from ...contract import parse_color
from ...errors import BadRequest

_REQUIRED = object()
GRAVITIES = (
    "centre", "north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest",
)
SMART = ("attention", "entropy", "faces", "focal")
KERNELS = ("nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3")


class OptionError(ValueError):
    """A value an option does not accept; the message says what it accepts."""


def hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True, slots=True)
class Opt:
    """One step option. ``kind``: int, float, bool, str, choice, color, point, list (of ``choices``)."""

    kind: str
    default: Any = _REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "list":
            return "a list of " + ", ".join(self.choices)
        if self.kind in ("int", "float"):
            what = "an integer" if self.kind == "int" else "a number"
            if self.lo is not None and self.hi is not None:
                return f"{what} from {self.lo:g} to {self.hi:g}"
            if self.lo is not None or self.hi is not None:
                return f"{what} at least {self.lo:g}" if self.lo is not None else f"{what} at most {self.hi:g}"
            return what
        return {"bool": "true or false", "color": 'a colour like "#ffffff" or [255, 255, 255]',
                "point": "[x, y] fractions from 0 to 1", "str": "a string"}.get(self.kind, self.kind)

    def check(self, value: Any) -> Any:
        """The accepted value (normalised), or OptionError naming what is allowed."""
        if value is None and (self.nullable or self.default is None):
            return None
        bad = OptionError(f"must be {self.describe()}, got {value!r}")
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            if self.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
                raise bad
            if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
                raise bad
            return int(value) if self.kind == "int" else float(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value:
                raise bad
            return value
        if self.kind == "choice":
            if not isinstance(value, str) or value.lower() not in self.choices:
                raise OptionError(f"must be {self.describe()}, got {value!r}{hint(str(value), self.choices)}")
            return value.lower()
        if self.kind == "list":
            items = value if isinstance(value, list) else [value]
            for item in items:
                if not isinstance(item, str) or item not in self.choices:
                    raise OptionError(f"must be {self.describe()}, got {item!r}{hint(str(item), self.choices)}")
            return tuple(items)
        if self.kind == "color":
            try:
                return parse_color(value, "colour")
            except BadRequest:
                raise bad from None
        if self.kind == "point":
            ok = isinstance(value, list) and len(value) == 2
            if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in value):
                raise bad
            return (float(value[0]), float(value[1]))
        raise AssertionError(self.kind)


def integer(lo: int, hi: int, default: Any = _REQUIRED, **kw: Any) -> Opt:
    return Opt("int", default, lo, hi, **kw)


def number(lo: float, hi: float, default: Any = _REQUIRED, **kw: Any) -> Opt:
    return Opt("float", default, lo, hi, **kw)


def choice(choices: tuple[str, ...], default: Any = _REQUIRED, **kw: Any) -> Opt:
    return Opt("choice", default, choices=choices, **kw)


def flag(default: bool) -> Opt:
    return Opt("bool", default)


def colour(default: Any = (255, 255, 255)) -> Opt:
    return Opt("color", default)


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
