"""The array executor on a strict CuPy stand-in (tests/support/strict_cupy.py): NumPy does the maths, but only
CuPy's names and keywords exist, and implicit host transfers, host arrays in device operations and
``ufunc.at`` / ``reduceat`` raise. Every case of the executor contract suite and every shipped pipeline on
every sample photo runs through it and must give exactly the NumPy executor's result: what a first GPU run
would trip over in the array code is found here, without a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import photo, photos
from support.strict_cupy import DeviceArray, module
from support.tools import GPU_CHECKS, require_module
from unit.arrays.test_arrays_executor_contract import CASES, KINDS, ctx, images, mark_png  # noqa: F401

from imgworker.arrays import device_io, executor, resample
from imgworker.arrays import image as arrays
from imgworker.arrays.orientation import orient
from imgworker.backends.gpu import GpuBackend, engine
from imgworker.core.contract import FITS, ResizeSpec
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.pipeline import PipelineSet
from imgworker.pipeline.steps import STEPS
from imgworker.stores import FileStore, Stores

REPO = Path(__file__).resolve().parents[3]
PIPELINES = ("thumbnail", "avatar", "web", "product_zoom")


@pytest.fixture(scope="module")
def xp() -> Any:
    require_module("cupy", GPU_CHECKS)  # its names and signatures are the stand-in's reference (no device is used)
    return module()


def _host(result: Any) -> np.ndarray:
    assert isinstance(result, DeviceArray), f"the step returned {type(result).__name__}, not a device array"
    return result.get()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "opts", "bound"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_contract_case_runs_on_the_strict_stand_in(xp: Any, images: dict[str, pyvips.Image],  # noqa: F811
                                                         mark_png: bytes, kind: str, name: str,  # noqa: F811
                                                         opts: dict[str, Any], bound: Any) -> None:
    step = STEPS[name]
    o = {**step.defaults(), **opts}
    host = arrays.from_vips(images[kind])
    want = step.array(np, host, o, ctx(mark_png))
    got = _host(step.array(xp, xp.asarray(host), o, ctx(mark_png)))
    assert got.dtype == want.dtype and np.array_equal(got, want), (name, opts, kind)


@pytest.mark.parametrize("position", ["attention", "entropy", "faces", "focal"])
def test_smart_crops_decide_on_the_strict_stand_in(xp: Any, position: str) -> None:
    if position == "faces":
        pytest.importorskip("cv2", reason="the [faces] extra (opencv-python-headless) is not installed")
    path = photo("dragonfly")
    small = arrays.from_vips(pyvips.Image.thumbnail(str(path), 500))
    step = STEPS["resize"]
    o = {**step.defaults(), "width": 200, "height": 200, "fit": "cover", "position": position}
    runs = []
    for mod, img in ((np, small), (xp, xp.asarray(small))):
        c = ctx(b"", source=path.read_bytes(), view=(0.0, 0.0, 1.0, 1.0), focal=(0.2, 0.7))
        out = step.array(mod, img, o, c)
        runs.append((out if mod is np else _host(out), c.view))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_animations_run_frame_by_frame_on_the_strict_stand_in(xp: Any, mark_png: bytes) -> None:  # noqa: F811
    base = arrays.from_vips(pyvips.Image.thumbnail(str(photo("dragonfly")), 64))
    strip = np.concatenate([base, base[:, ::-1], base[::-1]], axis=0)
    step = STEPS["crop"]
    o = {**step.defaults(), "width": 40, "height": 30, "gravity": "northwest"}
    want = executor.apply(np, step, o, executor.Frames(strip, base.shape[0]), ctx(mark_png))
    got = executor.apply(xp, step, o, executor.Frames(xp.asarray(strip), base.shape[0]), ctx(mark_png))
    assert got.page_height == want.page_height and np.array_equal(_host(got.img), want.img)


def _service(backend: GpuBackend, out: Path, root: Path) -> Service:
    pset = PipelineSet.load(str(REPO / "pipelines"), backend.name)
    return Service(Stores({"file": FileStore([str(out), str(root)])}), backend, Limits(), pset.current)


@pytest.mark.parametrize("name", [p.name for p in photos()])
def test_every_shipped_pipeline_runs_on_the_strict_stand_in(xp: Any, tmp_path: Path, name: str) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / name).write_bytes((photo("baseline").parent / name).read_bytes())
    pyvips.Image.thumbnail(str(photo("rgba")), 200).pngsave(str(root / "mark.png"))
    outputs: dict[str, list[bytes]] = {}
    for run in ("numpy", "strict"):
        backend = GpuBackend(np, name="numpy")
        if run == "strict":
            backend.engine.xp = xp  # the array executor's xp (plain resize keeps the NumPy engine)
        out = tmp_path / run
        out.mkdir()
        try:
            svc = _service(backend, out, root)
            for pipeline in PIPELINES:
                job: dict[str, Any] = {"src": (root / name).as_uri(), "dst": f"{out.as_uri()}/{pipeline}.out"}
                if pipeline == "web":
                    job["dst"] = f"{out.as_uri()}/web/"
                if pipeline == "product_zoom":
                    job.update(watermark=(root / "mark.png").as_uri(), width=512)
                result = svc.handle(json.dumps(job).encode(), pipeline=pipeline)
                for entry in result.get("outputs", [result]):
                    outputs.setdefault(run, []).append(Path(entry["dst"].removeprefix("file://")).read_bytes())
        finally:
            backend.close()
    assert len(outputs["strict"]) == len(outputs["numpy"]) >= 7
    assert outputs["strict"] == outputs["numpy"]  # the same pixels, so the same encoded bytes


def test_the_stand_in_refuses_what_cupy_would(xp: Any) -> None:
    """Negative controls: each of these is accepted by NumPy and must raise here."""
    import cupy

    a = xp.asarray(np.arange(24, dtype=np.float32).reshape(2, 4, 3))
    refused = {
        "np.asarray of a device array": lambda: np.asarray(a),
        "float() of a device array": lambda: float(a[0, 0, 0]),
        "int() of a device array": lambda: int(a.max()),
        "bool() of a device array": lambda: bool(a.any()),
        "a NumPy function on a device array": lambda: np.clip(a, 0, 1),
        "a NumPy ufunc on a device array": lambda: np.sqrt(a),
        "a host array in a device operation": lambda: a * np.ones(3, dtype=np.float32),
        "a host array as an index": lambda: a[np.array([0, 1])],
        "ufunc.at": lambda: xp.add.at(a, 0, 1),
        "ufunc.reduceat": lambda: xp.add.reduceat(a, [0, 1]),
        "a NumPy-only keyword": lambda: xp.clip(a, 0, 1, where=a > 1),
        "a NumPy-only ufunc keyword": lambda: xp.sqrt(a, where=a > 1),
        "a NumPy-only method keyword": lambda: a.sum(axis=0, initial=1.0),
    }
    for what, call in refused.items():
        with pytest.raises(TypeError):  # StrictCupyError, or NumPy's own refusal of a ufunc (__array_ufunc__=None)
            call()
        assert what
    numpy_only = sorted(n for n in set(dir(np)) - set(dir(cupy)) if not n.startswith("_") and callable(getattr(np, n)))
    assert numpy_only, "NumPy has no name CuPy lacks?"
    for n in numpy_only[:5]:
        assert not hasattr(xp, n), n
    # The explicit transfers CuPy code spells out are allowed.
    assert a.get().shape == (2, 4, 3) and xp.asnumpy(a).shape == (2, 4, 3) and a[0, 0, 0].item() == 0.0


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("kind", ["baseline", "rgba"])
def test_plain_resize_runs_on_the_strict_stand_in(xp: Any, fit: str, kind: str) -> None:
    """``resize@gpu``'s array code (engine.process: premultiplied resize, crop or pad) on the stand-in, with
    resample.py's xp path in place of the RawKernels (their compile is test_gpu_nvrtc.py's)."""
    host = arrays.from_vips(pyvips.Image.thumbnail(str(photo(kind)), 300))
    spec = ResizeSpec(width=120, height=90, fit=fit, background=(10, 20, 30))
    geo = plan(int(host.shape[1]), int(host.shape[0]), spec.width, spec.height, fit, Limits())

    def resizer(mod: Any) -> Any:
        return lambda img, w, h, dtype: resample.resize(mod, img, w, h).astype(dtype)

    want = engine.process(np, resizer(np), host, geo, spec)
    got = _host(engine.process(xp, resizer(xp), xp.asarray(host), geo, spec))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_and_device_jpeg_take_on_the_strict_stand_in(xp: Any, orientation: int) -> None:
    host = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    jpeg = device_io.DeviceJpeg(b"", orientation)
    jpeg.image = xp.asarray(host)
    assert np.array_equal(_host(jpeg.take(xp)), orient(np, host, orientation))
