"""``quality: auto`` end to end: Python client -> real gearmand -> real worker process -> file store, every
sample photo; each output's score re-measured here, by this package's SSIMULACRA2 (the worker's number,
exactly) and by the reference package on PyPI (within its ±1 agreement), against a lossless PNG of the same
job (the pixels the encoder was given). And a pipeline with ``quality: auto`` in its YAML."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from ssimulacra2 import compute_ssimulacra2
from support.corpus import PHOTOS, photo
from support.workerproc import WorkerProc

from imgworker.imaging.quality import ssimulacra2
from imgworker.testing.gearmand import Gearmand

SAMPLES = sorted(p.name for p in PHOTOS.iterdir() if p.suffix != ".md")
FIELDS = {"quality", "score", "probes", "auto", "target"}


def pixels(path: Path, flatten: bool = False) -> Any:
    image = pyvips.Image.new_from_file(str(path))
    if flatten and image.hasalpha():  # what a JPEG output was made from: flattened onto the default white
        image = image.flatten(background=[255, 255, 255]).cast("uchar")
    return image.numpy()


def check_output(result: dict[str, Any], out: Path, ref_png: Path, floor: float, fmt: str) -> None:
    assert set(result) >= FIELDS and result["bytes"] == out.stat().st_size, result
    assert result["target"] == floor and 1 <= result["probes"] <= 11
    ref = pixels(ref_png, flatten=fmt == "jpeg")
    dist = pixels(out)
    ours = ssimulacra2.ssimulacra2(ref, dist)
    assert ours == pytest.approx(result["score"], abs=0.01)  # the worker's score is this output's
    if result.get("limited_by") == "top_quality":  # allowed, but then said, at quality 100
        assert result["quality"] == 100 and ours < floor
        return
    assert "limited_by" not in result and ours >= floor, (out.name, result)
    if ref.shape[-1] == 3 or fmt == "jpeg":  # the package drops alpha: compare opaque outputs only
        flat = out.with_suffix(".ref.png")
        pyvips.Image.new_from_array(ref).write_to_file(str(flat))
        assert compute_ssimulacra2(str(flat), str(out)) >= floor - 1.0


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_auto_outputs_meet_the_floor_on_every_sample_photo(py_client: Any, core_root: Path, fmt: str) -> None:
    out = core_root / "out" / f"auto-{fmt}"
    out.mkdir(exist_ok=True)
    for name in SAMPLES:
        src = (PHOTOS / name).as_uri()
        ref_png = out / f"{Path(name).stem}.png"
        py_client.resize(src=src, dst=ref_png.as_uri(), width=512, height=512)  # the same pixels, lossless
        dst = out / f"{Path(name).stem}.{fmt}"
        result = py_client.resize(src=src, dst=dst.as_uri(), width=512, height=512, quality="auto").raw
        assert result["auto"] == "auto"
        check_output(result, dst, ref_png, 75.0, fmt)


@pytest.mark.parametrize(("quality", "floor", "fmt"), [("auto:eco", 65.0, "avif"), ("auto:best", 85.0, "jpeg"),
                                                       ("auto:70", 70.0, "avif")])
def test_tiers_and_targets(py_client: Any, core_root: Path, quality: str, floor: float, fmt: str) -> None:
    src = photo("dragonfly").as_uri()
    ref_png = core_root / "out" / f"tier-{floor:g}.png"
    dst = core_root / "out" / f"tier-{floor:g}.{fmt}"
    py_client.resize(src=src, dst=ref_png.as_uri(), width=400)
    result = py_client.resize(src=src, dst=dst.as_uri(), width=400, quality=quality).raw
    assert result["auto"] == quality
    check_output(result, dst, ref_png, floor, fmt)


def test_bad_auto_values_are_refused_and_the_worker_keeps_serving(py_client: Any, core_root: Path) -> None:
    from imgworker.core.errors import BadRequest

    src = photo("dragonfly").as_uri()
    with pytest.raises(BadRequest, match=r"did you mean 'auto'\?"):
        py_client.resize(src=src, dst=(core_root / "out" / "bad.jpg").as_uri(), width=64, quality="atuo")
    with pytest.raises(BadRequest, match="png is lossless"):
        py_client.resize(src=src, dst=(core_root / "out" / "bad.png").as_uri(), width=64, quality="auto")
    ok = py_client.resize(src=src, dst=(core_root / "out" / "ok.jpg").as_uri(), width=64, quality="auto")
    assert ok.raw["score"] >= 75


PIPELINE = """\
name: auto_web
description: two sizes, WebP and JPEG at the lowest quality that still looks right, and the PNG they came from
params:
  quality: {default: auto, description: "auto (75), auto:eco, auto:best, auto:N or a number"}
outputs:
  - resize: {width: [320, 640]}
    encode:
      - {format: webp, quality: $quality}
      - {format: jpeg, quality: $quality, mozjpeg: true}
      - {format: png}
"""


@pytest.fixture(scope="module")
def auto_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gearmand, WorkerProc, Path]]:
    root = tmp_path_factory.mktemp("autoq")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "auto_web.yaml").write_text(textwrap.dedent(PIPELINE))
    with Gearmand() as g:
        worker = WorkerProc([g.address], [PHOTOS, root], "--pipelines", str(root / "pipelines"))
        with worker.start(wait_for="auto_web"):
            yield g, worker, root


@pytest.mark.parametrize("quality,floor", [(None, 75.0), ("auto:best", 85.0), (82, None)])
def test_a_pipeline_with_quality_auto_in_yaml(auto_worker: tuple[Gearmand, WorkerProc, Path],
                                              quality: str | int | None, floor: float | None) -> None:
    from imgworker import Client

    g, _, root = auto_worker
    job: dict[str, Any] = {} if quality is None else {"quality": quality}
    with Client([g.address], timeout=120) as client:
        result = client.resize(src=photo("baseline").as_uri(), dst=f"file://{root}/{quality}/" + "{width}.{ext}",
                               function="auto_web", **job).raw
    outputs = {Path(o["dst"]).name: o for o in result["outputs"]}
    assert sorted(outputs) == ["320.jpg", "320.png", "320.webp", "640.jpg", "640.png", "640.webp"]
    for width in (320, 640):
        ref_png = root / str(quality) / f"{width}.png"
        for ext, fmt in (("webp", "webp"), ("jpg", "jpeg")):
            entry = outputs[f"{width}.{ext}"]
            if floor is None:  # a number given: a fixed quality, no search
                assert not FIELDS & set(entry) - {"quality"} and "quality" not in entry
                continue
            check_output(entry, root / str(quality) / f"{width}.{ext}", ref_png, floor, fmt)
