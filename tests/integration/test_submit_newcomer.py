"""`imgworker submit` and the Python client as a newcomer meets them, against a real gearmand, worker and S3 server:
a job for a function nobody serves says so ("no worker registered for X") instead of waiting silently, and an
s3:// prefix is listed with --s3-endpoint or refused with a clear message (exit 2), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.fixtures_s3 import S3_ENV, MotoServer, free_port
from support.workerproc import WorkerProc

from imgworker import Client
from imgworker.core.errors import Unavailable
from imgworker.testing.gearmand import Gearmand


def submit(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMGWORKER_"))}
    return subprocess.run([sys.executable, "-m", "imgworker", "submit", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})})


@pytest.fixture
def served(tmp_path: Path) -> Any:
    with Gearmand() as g, WorkerProc([g.start().address], [tmp_path]):
        yield g


def test_submit_says_no_worker_is_registered_for_a_typo(served: Gearmand, tmp_path: Path) -> None:
    proc = submit("--server", served.address, "--function", "resize_typo", "--timeout", "8",
                  str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))
    assert proc.returncode == 1, proc.stderr
    hint = f"no worker registered for 'resize_typo' on {served.address} (did you mean 'resize'?)"
    assert f"imgworker submit: {hint}; the job waits until one registers" in proc.stderr
    assert hint in proc.stdout  # and in the final error, once the wait is over
    assert "Traceback" not in proc.stderr


def test_python_client_says_no_worker_is_registered(served: Gearmand, tmp_path: Path) -> None:
    with Client([served.address], timeout=2) as client, pytest.raises(Unavailable) as info:
        client.run("resize_typo", {"src": (tmp_path / "a.jpg").as_uri(), "dst": (tmp_path / "b.jpg").as_uri()})
    assert "did not finish within 2" in str(info.value)
    assert f"no worker registered for 'resize_typo' on {served.address} (did you mean 'resize'?)" in str(info.value)


def test_a_served_function_that_times_out_gets_no_such_hint(served: Gearmand, tmp_path: Path) -> None:
    """The hint is only for a function nobody serves: a slow or missing worker elsewhere is another story."""
    with Client([served.address], timeout=0.001) as client, pytest.raises(Unavailable) as info:
        client.run("resize", {"src": (tmp_path / "none.jpg").as_uri(), "dst": (tmp_path / "b.jpg").as_uri(),
                              "width": 8})
    assert "no worker registered" not in str(info.value)


def test_submit_lists_an_s3_prefix_with_s3_endpoint() -> None:
    moto = MotoServer().start()
    try:
        s3 = moto.client()
        s3.create_bucket(Bucket="photos")
        s3.put_object(Bucket="photos", Key="in/a.jpg", Body=b"x")
        dead = f"127.0.0.1:{free_port()}"
        proc = submit("--server", dead, "--s3-endpoint", moto.endpoint, "s3://photos/in/", "s3://photos/out/",
                      env=S3_ENV)
        # Listed (one image found), then refused for want of a job server: exit 3, nothing submitted.
        assert proc.returncode == 3 and f"no job server reachable at {dead}" in proc.stderr, proc.stderr
        # Without credentials: a clear error and what to do, exit 2, no traceback.
        proc = submit("--server", dead, "--s3-endpoint", moto.endpoint, "s3://photos/in/", "s3://photos/out/")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "imgworker submit: cannot list s3://photos/in/: STORE_FAILED" in proc.stderr
        assert "needs credentials here" in proc.stderr and "--s3-endpoint URL" in proc.stderr
    finally:
        moto.stop()
