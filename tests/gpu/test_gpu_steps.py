"""Device check (``-m gpu``): every step's array executor on CuPy against the same code on NumPy, and the
shipped pipelines on a CuPy GpuBackend against the CPU backend. Run by benchmarks/gpu/pipelines_check.sh.

Bounds: the same array code on two devices differs only in float summation order and in CuPy's RawKernels
for resize (tests/gpu/test_gpu_cuda.py holds those to NumPy): PSNR >= 50 dB, max difference <= 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import photo
from unit.arrays.test_arrays_executor_contract import CASES, KINDS, SIDE, psnr

from imgworker.arrays import image as arrays
from imgworker.core.deadline import Deadline
from imgworker.core.limits import Limits
from imgworker.imaging.colour import to_srgb
from imgworker.pipeline.context import StepContext
from imgworker.pipeline.steps import STEPS

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp() -> Any:
    from imgworker.backends.gpu import detect

    return detect.require_gpu()


@pytest.fixture(scope="module")
def mark_png() -> bytes:
    return bytes(pyvips.Image.thumbnail(str(photo("rgba")), 120).pngsave_buffer())


def _ctx(mark: bytes, kernels: Any = None) -> StepContext:
    c = StepContext(Limits(), Deadline.after(60), kernels=kernels)
    c.cache["mem://mark.png"] = mark
    return c


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "opts", "bound"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_cupy_matches_numpy(cp: Any, mark_png: bytes, kind: str, name: str, opts: dict[str, Any],
                            bound: tuple[float, int]) -> None:
    from imgworker.backends.gpu import kernels

    image = to_srgb(pyvips.Image.thumbnail(str(photo(kind)), SIDE), "any").copy_memory()
    step = STEPS[name]
    o = {**step.defaults(), **opts}
    host = arrays.from_vips(image)
    ref = arrays.to_uint8(np, step.array(np, host, o, _ctx(mark_png)))
    dev = step.array(cp, cp.asarray(host), o, _ctx(mark_png, kernels))
    got = arrays.download(arrays.to_uint8(cp, dev))
    db, worst = psnr(ref, got)
    assert db >= 50.0 and worst <= 2, f"{name} {opts} on {kind}: {db:.2f} dB, max {worst}"


@pytest.fixture(scope="module")
def backends(cp: Any) -> Iterator[dict[str, Any]]:
    from imgworker.backends.cpu import CpuBackend
    from imgworker.backends.gpu import GpuBackend

    gpu = GpuBackend(cp, max_batch=4, max_wait_ms=2)
    yield {"cpu": CpuBackend(), "gpu": gpu}
    gpu.close()


@pytest.mark.parametrize("name", ["thumbnail", "avatar", "web", "product_zoom"])
def test_shipped_pipelines_on_the_gpu_match_the_cpu(backends: dict[str, Any], tmp_path: Path, name: str) -> None:
    from imgworker.jobs.service import Service
    from imgworker.pipeline import PipelineSet
    from imgworker.stores import FileStore, Stores

    results = {}
    for b, backend in backends.items():
        pset = PipelineSet.load("pipelines", b)
        svc = Service(Stores({"file": FileStore([str(tmp_path), str(photo("dragonfly").parent)])}), backend,
                      Limits(), pset.current)
        (tmp_path / b).mkdir()
        job = {"src": photo("dragonfly").as_uri(), "dst": (tmp_path / b).as_uri() + "/", "watermark":
               photo("rgba").as_uri()} if name in ("web", "product_zoom") else {
               "src": photo("dragonfly").as_uri(), "dst": (tmp_path / b / "out.webp").as_uri()}
        if name == "web":
            job.pop("watermark")
        if name == "product_zoom":
            job["dst"] = (tmp_path / b / "zoom.jpg").as_uri()
        results[b] = svc.handle(json.dumps(job).encode(), pipeline=name)
    assert results["gpu"]["backend"] == "gpu"
    for a, g in zip(results["cpu"].get("outputs", [results["cpu"]]), results["gpu"].get("outputs", [results["gpu"]]),
                    strict=True):
        pa = arrays.from_vips(pyvips.Image.new_from_file(a["dst"].removeprefix("file://")))
        pg = arrays.from_vips(pyvips.Image.new_from_file(g["dst"].removeprefix("file://")))
        assert psnr(pa, pg)[0] >= 30.0, (a, g)
