"""Fixtures for the pipeline tests: run a pipeline (YAML text) in-process against the corpus, real stores."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imgworker.backends.cpu import CpuBackend
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.pipeline import PipelineSet
from imgworker.stores import FileStore, Stores
from support.corpus import PHOTOS
from support.workerproc import REPO

__all__ = ["PIPELINES_DIR", "RunPipeline", "pl_photos", "run_pipeline"]

PIPELINES_DIR = REPO / "pipelines"
RunPipeline = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def pl_photos() -> Path:
    return PHOTOS


@pytest.fixture
def run_pipeline(tmp_path: Path, pl_photos: Path) -> RunPipeline:
    """``run_pipeline(yaml_text, src_name_or_path, dst="out.png", limits=..., **job_keys)`` -> result dict.

    The pipeline is written to a fresh directory and loaded the way a worker loads it; src is a corpus
    file name or an absolute path; dst is relative to tmp_path (the only writable root).
    """

    def run(text: str, src: str | Path, dst: str = "out.png", *, limits: Limits | None = None,
            fail_on: str = "warning", **job: Any) -> dict[str, Any]:
        pdir = tmp_path / "pipelines"
        pdir.mkdir(exist_ok=True)
        for old in pdir.glob("*.yaml"):
            old.unlink()
        (pdir / "p.yaml").write_text(textwrap.dedent(text))
        pset = PipelineSet.load(str(pdir), "cpu")
        (name,) = pset.current()
        stores = Stores({"file": FileStore([pl_photos, tmp_path])})
        service = Service(stores, CpuBackend(fail_on=fail_on), limits or Limits(), pset.current)
        path = Path(src) if Path(src).is_absolute() else pl_photos / src
        payload = {"src": path.as_uri(), "dst": f"file://{tmp_path}/{dst}" if "://" not in dst else dst, **job}
        return service.handle(json.dumps(payload).encode(), pipeline=name)

    return run
