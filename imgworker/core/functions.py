"""The Gearman function names, built here alone: ``NAME`` (any worker takes it) and ``NAME@BACKEND`` (only
that backend's workers: ``resize@gpu``, ``thumbnail@cpu``), NAME being a built-in or a pipeline's name.

A worker registers both forms of every name it serves (``registered``); the exporter watches the same set
for each backend; a batch tells a plain resize by its name without the tag (``untagged``).
"""

from __future__ import annotations

from collections.abc import Iterable

RESIZE = "resize"  # a plain resize job (docs/contract.md)
INFO = "info"  # the facts of a source, nothing written
BUILTIN = (RESIZE, INFO)  # served by every worker; no pipeline may take these names


def tagged(name: str, backend: str) -> str:
    """``name`` for ``backend``'s workers only: ``resize@gpu``."""
    return f"{name}@{backend}"


def untagged(function: str) -> str:
    """The name without its backend tag: ``resize@gpu`` -> ``resize``."""
    return function.split("@")[0]


def registered(backend: str, pipelines: Iterable[str]) -> dict[str, str | None]:
    """Gearman function name -> pipeline name (None for plain resize) for a ``backend`` worker serving
    ``pipelines``. A CPU worker never registers @gpu. ``info`` maps to itself: the service tells it by that
    target (no pipeline has the name)."""
    names: dict[str, str | None] = {}
    for name in [RESIZE, *pipelines]:
        target = None if name == RESIZE else name
        names[name] = names[tagged(name, backend)] = target
    names[INFO] = names[tagged(INFO, backend)] = INFO
    return names
