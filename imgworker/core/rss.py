"""This process's resident memory, from /proc (the worker's memory gauge and the prefork supervisor's own)."""

from __future__ import annotations

import os


def resident_bytes() -> int | None:
    """Resident set size of this process in bytes, or None where /proc cannot tell."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
