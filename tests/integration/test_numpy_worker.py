"""Every shipped pipeline, and plain ``resize``, through a real gearmand on a CPU worker and a
``--backend numpy`` worker (the GPU executor's array code and batcher on NumPy): same jobs on every sample
photo of examples/images, outputs compared. ``avatar`` runs with each smart position (attention, the default;
entropy; faces): its window is decided once, on the source (imgworker/pipeline/steps/gravity.py), so both
workers crop the same part of the photo.

Bound: PSNR >= 30 dB between the two decoded outputs (each lossy-encoded once from pixels that agree at
47-99 dB, tests/unit/arrays/test_arrays_executor_contract.py; re-encoding a 1-grey-level difference moves
JPEG/WebP blocks, so a lossy pair lands at 33-50 dB). A missing watermark or a crop a few pixels off measures
below 25 dB.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import photo, photos
from support.fixtures_pipeline import PIPELINES_DIR
from support.workerproc import WorkerProc, registered

from imgworker.gearman import Client
from imgworker.testing.gearmand import Gearmand

BOUND_DB = 30.0
PHOTOS = [p.name for p in photos()]


@pytest.fixture(scope="module")
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    for src in photos():  # the files as shipped: each worker decodes them its own way
        (root / src.name).write_bytes(src.read_bytes())
    pyvips.Image.thumbnail(str(photo("rgba")), 200).pngsave(str(root / "mark.png"))
    return root


@pytest.fixture(scope="module")
def workers(server: Gearmand, root: Path) -> Iterator[dict[str, WorkerProc]]:
    procs = {b: WorkerProc([server.address], [root], "--pipelines", str(PIPELINES_DIR), "--backend", b)
             for b in ("cpu", "numpy")}
    procs["cpu"].start(wait_for="product_zoom@cpu")
    try:
        procs["numpy"].start(wait_for="product_zoom@numpy", timeout=60)
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def run_jobs(address: str, jobs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with Client([address]) as client:
            done = await asyncio.gather(*(client.submit(f, json.dumps(p).encode(), timeout=180) for f, p in jobs))
        return [json.loads(d) for d in done]

    return asyncio.run(go())


def pixels(url: str) -> np.ndarray:
    image = pyvips.Image.new_from_file(url.removeprefix("file://"))
    image = image.colourspace("srgb") if image.bands < 3 else image
    image = image.flatten(background=[255, 255, 255]) if image.hasalpha() else image
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, 3))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else float(10 * np.log10(255**2 / mse))


def test_numpy_worker_registers_numpy_names_never_gpu(server: Gearmand, workers: dict[str, WorkerProc]) -> None:
    for name in ("resize", "thumbnail", "avatar", "web", "product_zoom"):
        assert registered(server.address, f"{name}@numpy") == 1
        assert registered(server.address, f"{name}@cpu") == 1
        assert registered(server.address, f"{name}@gpu") == 0
        assert registered(server.address, name) == 2  # both serve the untagged name


@pytest.mark.parametrize("name", PHOTOS)
def test_shipped_pipelines_and_resize_agree_on_cpu_and_numpy_workers(
    server: Gearmand, workers: dict[str, WorkerProc], root: Path, name: str
) -> None:
    src = (root / name).as_uri()
    kind = name.rsplit(".", 1)[0]
    jobs: list[tuple[str, dict[str, Any]]] = []
    for backend in ("cpu", "numpy"):
        out = root / "out" / kind / backend
        out.mkdir(parents=True, exist_ok=True)
        base = {"src": src}
        jobs += [
            (f"thumbnail@{backend}", {**base, "dst": f"{out.as_uri()}/thumb.jpg"}),
            (f"avatar@{backend}", {**base, "dst": f"{out.as_uri()}/avatar.webp"}),  # attention
            (f"avatar@{backend}", {**base, "dst": f"{out.as_uri()}/entropy.webp", "position": "entropy"}),
            (f"avatar@{backend}", {**base, "dst": f"{out.as_uri()}/faces.png", "position": "faces",
                                   "format": "png"}),
            (f"web@{backend}", {**base, "dst": f"{out.as_uri()}/"}),
            (f"product_zoom@{backend}", {**base, "dst": f"{out.as_uri()}/zoom.jpg", "width": 512,
                                         "watermark": (root / "mark.png").as_uri()}),
            (f"resize@{backend}", {**base, "dst": f"{out.as_uri()}/resize.png", "width": 300, "format": "png"}),
            (f"resize@{backend}", {**base, "dst": f"{out.as_uri()}/cover.jpg", "width": 200, "height": 200,
                                   "fit": "cover"}),
        ]
    results = run_jobs(server.address, jobs)
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]]
    half = len(results) // 2
    compared = 0
    for cpu, num in zip(results[:half], results[half:], strict=True):
        assert cpu["backend"] == "cpu" and num["backend"] == "numpy"
        for a, b in zip(cpu.get("outputs", [cpu]), num.get("outputs", [num]), strict=True):
            assert (a["width"], a["height"], a["format"]) == (b["width"], b["height"], b["format"])
            db = psnr(pixels(a["dst"]), pixels(b["dst"]))
            assert db >= BOUND_DB, (a["dst"], b["dst"], db)
            compared += 1
    # thumbnail, 3 x avatar, web (2 formats x each width not above the photo's), product_zoom, 2 x resize
    assert compared == sum(len(r.get("outputs", [r])) for r in results[:half]) >= 11


def test_the_bound_catches_a_missing_watermark(server: Gearmand, workers: dict[str, WorkerProc],
                                               root: Path) -> None:
    src = (root / photo("exif6").name).as_uri()
    out = root / "out" / "control"
    out.mkdir(parents=True, exist_ok=True)
    marked, bare = run_jobs(server.address, [
        ("product_zoom@numpy", {"src": src, "dst": f"{out.as_uri()}/marked.jpg", "width": 512, "opacity": 1.0,
                                "watermark": (root / "mark.png").as_uri()}),
        ("product_zoom@cpu", {"src": src, "dst": f"{out.as_uri()}/bare.jpg", "width": 512, "opacity": 0.0,
                              "watermark": (root / "mark.png").as_uri()}),
    ])
    assert psnr(pixels(marked["dst"]), pixels(bare["dst"])) < BOUND_DB - 5
