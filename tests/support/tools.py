"""One policy for what a test needs from the machine (a program, a Python extra, a privilege).

In CI (``CI=true``, as GitHub Actions, GitLab and .ci/run set it) a missing need fails the test: a run that
skipped whole modules must not pass. Outside CI the test is skipped, and the reason says how to install it.
``./dev setup`` installs everything the suite needs.

Use ``require_tool`` / ``require_module`` / ``require_privilege`` inside a test or fixture, or mark a test or
module with ``needs_tool(...)`` (the conftest applies it before the test runs).
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import Any, NoReturn

import pytest

SETUP = "./dev setup"
# The GPU path's checks that need no GPU (docs/gpu.md, "Proven without a GPU"): in the dev extra.
GPU_CHECKS = "pip install -e '.[dev]' (cupy-cuda12x, nvidia-cuda-nvrtc-cu12, nvidia-nvimgcodec-cu12; ~570 MB, no GPU)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str, install: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) because ``what`` is missing; ``install`` says how to get it."""
    if in_ci():
        pytest.fail(f"{what} is missing on this CI machine (install: {install}; or {SETUP})", pytrace=False)
    pytest.skip(f"{what} is missing: install with `{install}` (or {SETUP})", allow_module_level=True)


def require_tool(name: str, install: str, *, path: str | None = None) -> str:
    """The path of program ``name`` (or of ``path`` if that exists), else fail/skip."""
    found = shutil.which(name) or (path if path and os.path.exists(path) else None)
    if found is None:
        missing(f"the program {name!r}", install)
    return found


def require_module(name: str, install: str) -> ModuleType:
    """Python module ``name`` imported, else fail/skip (an optional extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python module {name!r}", install)


def require_privilege(why: str, how: str) -> NoReturn:
    """A test that needs a privilege the run lacks: fail in CI (which runs as root), skip elsewhere."""
    missing(why, how)


def needs_tool(name: str, install: str, *, path: str | None = None) -> Any:
    """A mark: the test (or module, as ``pytestmark``) needs program ``name``; checked before it runs."""
    return pytest.mark.needs_tool(name, install, path=path)


def needs(available: bool, what: str, install: str) -> Any:
    """A mark for a need ``shutil.which`` cannot see (a PHP extension, a Perl module): ``available`` is the
    check's answer, made at import."""
    return pytest.mark.needs(available, what, install)


def check_marks(item: pytest.Item) -> None:
    """Called by tests/conftest.py before each test: apply every ``needs_tool`` and ``needs`` mark."""
    for mark in item.iter_markers("needs_tool"):
        require_tool(*mark.args, **mark.kwargs)
    for mark in item.iter_markers("needs"):
        available, what, install = mark.args
        if not available:
            missing(what, install)


def require_node_client(node_dir: os.PathLike[str] | str) -> None:
    """Node.js and the Node examples' npm packages (``./dev setup`` installs them; tests never run npm)."""
    require_tool("node", "apt-get install nodejs npm")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "gearman")):
        missing(f"the npm packages of {node_dir}", f"cd {node_dir} && npm ci")
