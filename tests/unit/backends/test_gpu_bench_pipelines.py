"""benchmarks/gpu/pipelines.py (the device run's pipeline bench) records a failed job and goes on: one bad job
must not end a 10-minute device run. Runs the bench's own job loop on the numpy GpuBackend (no GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from support.corpus import photo

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repo, not of the installed wheel

from benchmarks.gpu import pipelines as bench  # noqa: E402
from imgworker.backends.gpu import GpuBackend  # noqa: E402


def test_a_failed_job_is_recorded_and_the_others_are_measured(tmp_path: Path) -> None:
    backend = GpuBackend(np, name="numpy")
    try:
        svc = bench._service(backend, tmp_path)
        src = photo("png_named_jpg")  # 400 px: keeps the numpy reference quick
        jobs = [bench._job("thumbnail", src, tmp_path, i) for i in range(3)]
        jobs[1] = {**jobs[1], "src": (tmp_path / "missing.jpg").as_uri()}
        got = bench.run_gpu(svc, "thumbnail", jobs, threads=2)
    finally:
        backend.close()
    assert (got["ok"], got["failed"]) == (2, 1)
    assert got["errors"][0]["src"].endswith("missing.jpg") and got["errors"][0]["code"]
    assert got["img_s"] > 0 and len(got["ms"]) == 2
    assert (tmp_path / "thumbnail-2.jpg").exists()  # the job after the failure ran
