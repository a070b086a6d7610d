"""Job-controlled text shown to a person (a log line, ``imgworker failed list``): nothing in it may act on the
terminal or forge a line.

Escaped as Python escapes (``\\n``, ``\\x1b``, ``\\u202e``): C0 and C1 controls and DEL (newline, ESC, the
OSC/CSI sequences that retitle a terminal or move its cursor, BEL), the Unicode line and paragraph separators,
the bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C: "Trojan Source" reordering)
and lone surrogates (which cannot be printed as UTF-8 at all).
"""

from __future__ import annotations

import re

from imgworker.core.urls import CONTROL_CHARACTERS

# What a URL may not hold (urls.py), and for display also the bidi controls and lone surrogates.
_DISPLAY_ONLY = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"{CONTROL_CHARACTERS.pattern}|[{_DISPLAY_ONLY}]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return f"\\u{ord(char):04x}"  # unicode_escape would pass a lone surrogate through
    return char.encode("unicode_escape").decode("ascii")


def escape_controls(text: str, limit: int | None = None) -> str:
    """``text`` (its first ``limit`` characters) with every unsafe character escaped."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_escape, text)
