"""Shared fixtures and the suite's markers.

The folder a test lives in is its kind, and its marker: ``unit`` (one module, no job server or worker process;
``./dev test -m unit`` runs them alone in under a minute), ``integration`` (real gearmand, workers, clients,
S3 server), ``reliability`` (faults, kills, hostile input), ``deploy`` (images, manifests, autoscaling), ``fuzz``
and ``gpu`` (code that runs on the device; the tests that need one are marked ``gpu`` too and deselected here),
``containers`` (the built images run as k8s/ runs them: ``./dev images`` builds them and runs this folder alone;
deselected in a plain run, which has no images).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import fuzzing, workerproc
from support.fixtures_core import *  # noqa: F403
from support.fixtures_gearman import *  # noqa: F403
from support.fixtures_pipeline import *  # noqa: F403
from support.fixtures_reliability import *  # noqa: F403
from support.fixtures_s3 import *  # noqa: F403
from support.receivers import receivers  # noqa: F401
from support.tools import check_marks

TESTS = Path(__file__).resolve().parent
fuzzing.load()  # the Hypothesis profile, before any test module builds its settings
KINDS = ("unit", "integration", "reliability", "deploy", "fuzz", "containers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).resolve().relative_to(TESTS).parts[0]
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session", autouse=True)
def _worker_logs_in_the_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    workerproc.LOG_DIR = tmp_path_factory.mktemp("worker-logs", numbered=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    check_marks(item)  # a missing tool fails in CI and skips (with the install command) elsewhere
