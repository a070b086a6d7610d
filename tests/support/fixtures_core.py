"""Fixtures for the service tests: a private gearmand, a worker process, a file-store root, corpus paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgworker.testing.gearmand import Gearmand
from support.corpus import BAD, PHOTOS
from support.workerproc import WorkerProc

__all__ = ["BAD", "PHOTOS", "core_gearmand", "core_root", "core_worker", "py_client"]


@pytest.fixture(scope="session")
def core_gearmand() -> Iterator[Gearmand]:
    """A gearmand of the core tests' own: other areas' workers never take their ``resize`` jobs."""
    with Gearmand() as g:
        yield g


@pytest.fixture(scope="session")
def core_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    (root / "out").mkdir()
    (root / "in").mkdir()
    return root


@pytest.fixture(scope="session")
def core_worker(core_gearmand: Gearmand, core_root: Path) -> Iterator[WorkerProc]:
    """One real worker process serving resize jobs with the corpus and ``core_root`` as its roots."""
    worker = WorkerProc([core_gearmand.address], [PHOTOS, BAD, core_root], concurrency=2)
    with worker:
        yield worker


@pytest.fixture
def py_client(core_worker: WorkerProc) -> Iterator[object]:
    from imgworker import Client

    with Client(core_worker.servers, timeout=60) as client:
        yield client
