"""Optional test dependencies (CuPy, nvImageCodec): installed by the dev extra (``./dev setup``).

In CI (``CI`` set) a missing one is a failure, never a skip; elsewhere the test skips and says how to install it.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

DEV_INSTALL = "pip install -e '.[dev]' (cupy-cuda12x, nvidia-cuda-nvrtc-cu12, nvidia-nvimgcodec-cu12; ~570 MB)"


def need(module: str) -> Any:
    """The module, or a skip naming the install command (a failure in CI)."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed: {DEV_INSTALL}")
