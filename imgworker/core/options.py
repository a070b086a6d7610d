"""One validation path for every option a job or a pipeline gives: typed, ranged, with defaults, and a
"did you mean" hint for every misspelt key or choice. A resize job's keys (contract.py) and a pipeline step's
options (pipeline/steps/) are both ``Opt``s, so ``fit: "cove"`` gets the same message on either.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imgworker.core.errors import BadRequest
from imgworker.core.quality import TIERS, AutoQuality, parse_auto

_REQUIRED = object()


class OptionError(ValueError):
    """A value an option does not accept; the message says what it accepts."""


def suggest(word: str, choices: Any) -> str:
    """The " (did you mean 'x'?)" for the closest of ``choices``, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""



@dataclass(frozen=True, slots=True)
class Opt:
    """One step option. ``kind``: int, float, bool, str, choice, color, point, list (of ``choices``), quality
    (an int from ``lo`` to ``hi`` or an ``auto`` setting: imgworker/core/quality.py)."""

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
        if self.kind == "quality":
            return (f"an integer from {self.lo:g} to {self.hi:g}, or \"auto\", \"auto:eco\", \"auto:best\" or "
                    "\"auto:N\" (N: a SSIMULACRA2 score from 30 to 95)")
        if self.kind in ("int", "float"):
            what = "an integer" if self.kind == "int" else "a number"
            if self.lo is not None and self.hi is not None:
                return f"{what} from {self.lo:g} to {self.hi:g}"
            if self.lo is not None or self.hi is not None:
                return f"{what} at least {self.lo:g}" if self.lo is not None else f"{what} at most {self.hi:g}"
            return what
        return {"bool": "true or false", "color": 'a colour like "#ffffff" or [255, 255, 255]',
                "point": "[x, y] fractions from 0 to 1", "str": "a string"}.get(self.kind, self.kind)

    def _bad(self, value: Any) -> OptionError:
        return OptionError(f"must be {self.describe()}, got {value!r}")  # built only on failure: checks are hot

    def check(self, value: Any) -> Any:
        """The accepted value (normalised), or OptionError naming what is allowed."""
        if value is None and (self.nullable or self.default is None):
            return None
        if self.kind == "quality":
            if isinstance(value, AutoQuality):
                return value  # a parameter's default, checked when the file loaded
            if isinstance(value, str):
                auto = parse_auto(value)
                if auto is None:
                    raise OptionError(f"must be {self.describe()}, got {value!r}{suggest(value, TIERS)}")
                return auto
            try:
                return Opt("int", self.default, self.lo, self.hi).check(value)
            except OptionError:
                raise self._bad(value) from None
        if self.kind in ("int", "float"):
            # NaN passes every range check (all comparisons are False) and inf an open one: neither is a number
            # a step can use (JSON decoding accepts NaN and Infinity).
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise self._bad(value)
            if self.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
                raise self._bad(value)
            if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
                raise self._bad(value)
            return int(value) if self.kind == "int" else float(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self._bad(value)
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value:
                raise self._bad(value)
            return value
        if self.kind == "choice":
            if not isinstance(value, str) or value.lower() not in self.choices:
                raise OptionError(f"must be {self.describe()}, got {value!r}{suggest(str(value), self.choices)}")
            return value.lower()
        if self.kind == "list":
            items = value if isinstance(value, list) else [value]
            for item in items:
                if not isinstance(item, str) or item not in self.choices:
                    raise OptionError(f"must be {self.describe()}, got {item!r}{suggest(str(item), self.choices)}")
            return tuple(items)
        if self.kind == "color":
            try:
                return parse_color(value, "colour")
            except BadRequest:
                raise self._bad(value) from None
        if self.kind == "point":
            ok = isinstance(value, list) and len(value) == 2
            if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in value):
                raise self._bad(value)
            return (float(value[0]), float(value[1]))
        raise AssertionError(self.kind)


def integer(lo: int, hi: int, default: Any = _REQUIRED, **kw: Any) -> Opt:
    return Opt("int", default, lo, hi, **kw)


def quality(lo: int = 1, hi: int = 100, default: Any = None) -> Opt:
    """A quality: an integer from ``lo`` to ``hi``, or ``"auto"`` and its tiers and targets."""
    return Opt("quality", default, lo, hi)


def number(lo: float, hi: float, default: Any = _REQUIRED, **kw: Any) -> Opt:
    return Opt("float", default, lo, hi, **kw)


def choice(choices: tuple[str, ...], default: Any = _REQUIRED, **kw: Any) -> Opt:
    return Opt("choice", default, choices=choices, **kw)


def flag(default: bool) -> Opt:
    return Opt("bool", default)


def colour(default: Any = (255, 255, 255)) -> Opt:
    return Opt("color", default)


def check_options(given: Mapping[str, Any], options: Mapping[str, Opt]) -> dict[str, Any]:
    """Each of ``options`` from ``given`` (absent or null: its default), as BadRequest "'key' must be ...".
    Unknown keys are the caller's to refuse (it knows which other keys the payload may hold)."""
    values: dict[str, Any] = {}
    for key, opt in options.items():
        value = given.get(key)
        if value is None:
            values[key] = None if opt.required else opt.default
            continue
        try:
            values[key] = opt.check(value)
        except OptionError as exc:
            raise BadRequest(f"{key!r} {exc}") from None
    return values


_HEX = re.compile("[0-9A-Fa-f]+")


def parse_color(value: Any, key: str = "background") -> tuple[int, int, int]:
    """``"#rrggbb"``, ``"#rgb"`` or ``[r, g, b]`` (0-255)."""
    if isinstance(value, str) and value.startswith("#") and len(value) in (4, 7) and _HEX.fullmatch(value[1:]):
        hexpart = value[1:]
        if len(hexpart) == 3:
            hexpart = "".join(c * 2 for c in hexpart)
        try:
            return (int(hexpart[0:2], 16), int(hexpart[2:4], 16), int(hexpart[4:6], 16))
        except ValueError:
            pass
    elif (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return (value[0], value[1], value[2])
    raise BadRequest(f'{key!r} must be a colour like "#ffffff" or [255, 255, 255], got {value!r}')
