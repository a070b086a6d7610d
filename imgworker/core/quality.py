"""``quality``: a number, or ``"auto"`` (the smallest file that still looks right) with a tier or a target.

``"auto"`` asks the worker to search for the lowest quality whose output scores at least the tier's floor in
SSIMULACRA2 (imgworker/imaging/quality/): ``auto:eco`` 65, ``auto`` 75, ``auto:best`` 85, or ``auto:N`` for
an explicit score N (30 to 95). JPEG, WebP and AVIF only. docs/contract.md describes it for users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imgworker.core.errors import BadRequest

TIERS = {"auto:eco": 65.0, "auto": 75.0, "auto:best": 85.0}
TARGET_MIN, TARGET_MAX = 30.0, 95.0  # an explicit target: below 30 is broken, above 95 beyond what lossy reaches
AUTO_FORMATS = ("jpeg", "webp", "avif")
_TARGET = re.compile(r"auto:(\d{1,2}(?:\.\d{1,2})?)")


@dataclass(frozen=True, slots=True)
class AutoQuality:
    """A search for the lowest quality whose SSIMULACRA2 score is at least ``target``; ``name`` as given."""

    target: float
    name: str


Quality = int | AutoQuality


def describe() -> str:
    return (f"an integer from 1 to 100, or \"auto\", \"auto:eco\", \"auto:best\" or \"auto:N\" (a SSIMULACRA2 score "
            f"from {TARGET_MIN:g} to {TARGET_MAX:g})")


def parse_auto(value: Any) -> AutoQuality | None:
    """The AutoQuality a string names, or None when it is not one (the caller says what is accepted)."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in TIERS:
        return AutoQuality(TIERS[text], text)
    match = _TARGET.fullmatch(text)
    if match and TARGET_MIN <= float(match.group(1)) <= TARGET_MAX:
        return AutoQuality(float(match.group(1)), f"auto:{float(match.group(1)):g}")
    return None


def check_auto(fmt: str, quality: Quality | None, lossless: bool = False) -> None:
    """BadRequest where ``auto`` is asked of a format it cannot search (PNG, GIF, lossless)."""
    if not isinstance(quality, AutoQuality):
        return
    if fmt not in AUTO_FORMATS:
        raise BadRequest(f"'quality' {quality.name!r} works for {', '.join(AUTO_FORMATS)}; {fmt} is lossless: "
                         "give a number (PNG: palette quality) or leave it out")
    if lossless:
        raise BadRequest(f"'quality' {quality.name!r} searches lossy qualities: it cannot go with lossless: true")
