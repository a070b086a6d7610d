"""The soak test in its CI size: 10,000 jobs from Python, PHP and Perl clients through two workers with random
SIGKILLs and one SIGKILL + restart of the durable job server; every job is accounted for, and no accepted
background job had to be resubmitted (tests/support/soak.py; docs/reliability.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from support.soak import SoakConfig, run_soak
from support.tools import require_tool


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_loses_no_job(tmp_path: Path) -> None:
    require_tool("php", "apt-get install php-cli php-gearman")
    require_tool("perl", "apt-get install libgearman-client-perl")
    report = run_soak(SoakConfig(jobs=10_000, kill_every=4.0))
    print("soak report:", json.dumps(asdict(report) | {"wrong": report.wrong[:20]}))
    (tmp_path / "soak.json").write_text(json.dumps(asdict(report), indent=2))
    assert report.jobs >= 10_000 and set(report.by_client) == {"python-fg-0", "python-fg-1", "python-bg", "php", "perl"}
    assert report.lost == 0 and report.wrong == [], report.wrong[:20]
    assert report.outcomes.get("ok", 0) + sum(v for k, v in report.outcomes.items() if k != "ok") == report.jobs
    assert set(report.outcomes) <= {"ok", "SOURCE_NOT_FOUND", "UNSUPPORTED_IMAGE", "FORBIDDEN_PATH"}
    # The chaos happened: workers were killed, the job server was SIGKILLed while background jobs were queued,
    # and its sqlite queue brought them back by itself: no accepted background job was sent twice.
    assert report.workers_killed >= 3 and report.server_restarts == 1
    assert report.bg_missing_after_restart > 0 and report.queued_after_restart > 0
    assert report.bg_resubmissions == 0
    assert report.peak_rss_mib < 512, f"worker peak RSS {report.peak_rss_mib} MiB"
