"""Every CUDA source the package builds compiles with NVRTC for sm_80 (A100) and sm_90 (H100/H200), without a GPU.

The compile goes through CuPy's own path (``compile_with_cache``: its include directories, ``-ftz=true``, the
``-arch=sm_XX`` it would pick, name expressions), with NVRTC from the nvidia-cuda-nvrtc-cu12 wheel. Only two
things need a device and are replaced: CuPy's arch lookup (the device's compute capability) and loading the
cubin into a CUDA context, which fails here after the compile (that step is the device run's,
tests/gpu/test_gpu_cuda.py::test_kernels_compile_once).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from support.tools import GPU_CHECKS, require_module

from imgworker.backends.gpu import kernels

REPO = Path(__file__).resolve().parents[3]
# (module, source, options, name expressions) of every CUDA source in imgworker/.
SOURCES = {"imgworker/backends/gpu/kernels.py": (kernels.SOURCE, kernels.OPTIONS, tuple(kernels.NAMES))}
_BUILDERS = re.compile(r"\b(RawModule|RawKernel|ElementwiseKernel|ReductionKernel|compile_with_cache)\s*\(")


def test_every_cuda_source_of_the_package_is_listed_here() -> None:
    found = {str(p.relative_to(REPO)) for p in (REPO / "imgworker").rglob("*.py") if _BUILDERS.search(p.read_text())}
    assert found == set(SOURCES), f"a CUDA source to add to SOURCES: {sorted(found - set(SOURCES))}"


def compile_for(arch: str, source: str, options: tuple[str, ...], names: tuple[str, ...],
                monkeypatch: pytest.MonkeyPatch, cache: Path) -> tuple[tuple[str, ...], bytes, dict[str, str], str]:
    """(NVRTC options, cubin, name expression -> mangled name, NVRTC log) of CuPy's compile for ``arch``."""
    cupy = require_module("cupy", GPU_CHECKS)
    from cupy._core import core
    from cupy.cuda import compiler

    # An empty kernel cache, so that NVRTC compiles now (CuPy's disk cache would hand back an earlier cubin).
    monkeypatch.setattr(compiler, "_kernel_cache_backend", compiler._DiskKernelCacheBackend(str(cache)))
    monkeypatch.setattr(compiler, "_get_arch", lambda: arch)  # the device's compute capability
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda a=None: (f"-arch=sm_{a or arch}", "cubin"))
    seen: list[tuple[tuple[str, ...], Any, Any]] = []
    real = compiler._NVRTCProgram.compile

    def spy(self: Any, opts: tuple[str, ...] = (), log_stream: Any = None) -> Any:
        out = real(self, opts, log_stream)
        seen.append((opts, out[0], out[1]))
        return out

    monkeypatch.setattr(compiler._NVRTCProgram, "compile", spy)
    log = io.StringIO()
    # Loading the cubin needs a CUDA context and fails here: the compile is done by then.
    with contextlib.suppress(cupy.cuda.runtime.CUDARuntimeError):
        core.compile_with_cache(source, options, arch, prepend_cupy_headers=False, backend="nvrtc",
                                name_expressions=names, log_stream=log)
    final = [s for s in seen if any(o.startswith("-arch=sm_") for o in s[0])]
    assert final, f"NVRTC never compiled for sm_{arch}"
    opts, cubin, mapping = final[-1]
    return opts, bytes(cubin), dict(mapping or {}), log.getvalue()


@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("where", sorted(SOURCES))
def test_cuda_source_compiles_with_nvrtc(arch: str, where: str, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    source, options, names = SOURCES[where]
    opts, cubin, mapping, log = compile_for(arch, source, options, names, monkeypatch, tmp_path)
    assert f"-arch=sm_{arch}" in opts and "-ftz=true" in opts and set(options) <= set(opts)
    assert cubin[:4] == b"\x7fELF" and len(cubin) > 1000  # SASS for this arch, not PTX
    assert set(mapping) == set(names) and all(m.startswith("_Z") for m in mapping.values())
    assert not log.strip(), f"NVRTC warnings for sm_{arch}:\n{log}"


def test_a_broken_kernel_fails_the_compile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Negative control: a syntax error in the source is NVRTC's CompileException, not a silent pass."""
    require_module("cupy", GPU_CHECKS)
    from cupy.cuda.compiler import CompileException

    source, options, names = SOURCES["imgworker/backends/gpu/kernels.py"]
    broken = source.replace("float acc = 0.0f;", "float acc = 0.0f", 1)
    with pytest.raises(CompileException):
        compile_for("90", broken, options, names, monkeypatch, tmp_path)
