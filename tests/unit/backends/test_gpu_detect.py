"""Detection without a GPU: gpu_available() is False cleanly, and --backend gpu says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imgworker.backends.gpu import GpuBackend, create_backend, detect, gpu_available
from imgworker.core.config import ConfigError, WorkerConfig


def test_gpu_available_is_false_here() -> None:
    # CI and the dev machines have no CUDA device (cupy may or may not be installed).
    assert gpu_available() is False
    ok, reason = detect.probe()
    assert ok is False and reason


def test_backend_gpu_error_names_the_extras() -> None:
    with pytest.raises(ConfigError) as err:
        create_backend(WorkerConfig())
    msg = str(err.value)
    assert msg.startswith("--backend gpu: no usable CUDA device")
    assert "imgworker[gpu]" in msg and "imgworker[gpu-cuda13]" in msg and "CUDA 12" in msg
    with pytest.raises(detect.GpuUnavailable):
        GpuBackend()


def test_missing_cupy_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cupy() -> None:
        raise ImportError("No module named 'cupy'")

    detect.probe.cache_clear()
    monkeypatch.setattr(detect, "_import_cupy", no_cupy)
    try:
        assert detect.probe() == (False, "cupy is not installed (No module named 'cupy')")
        with pytest.raises(detect.GpuUnavailable, match=r"cupy is not installed.*imgworker\[gpu\]"):
            detect.require_gpu()
    finally:
        detect.probe.cache_clear()


def test_package_imports_without_cupy() -> None:
    # Block cupy entirely: the package (and its numpy path) must still import and work.
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy as np\n"
        "from imgworker.backends.gpu import GpuBackend, gpu_available\n"
        "assert gpu_available() is False\n"
        "b = GpuBackend(xp=np); b.close(); print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_app_auto_picks_cpu_and_gpu_fails_clearly() -> None:
    from imgworker.worker.process import build_backend

    assert build_backend(WorkerConfig(backend="auto")).name == "cpu"
    with pytest.raises(ConfigError, match=r"imgworker\[gpu-cuda13\]"):
        build_backend(WorkerConfig(backend="gpu"))
