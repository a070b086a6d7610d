"""`imgworker submit` as a user runs it (the real CLI, a real gearmand and worker): sources that would write one
destination are refused before anything is submitted (or kept apart with --keep-extension); the exit code tells
"some jobs failed" (1) from "no job server reachable" (3); Ctrl-C still prints the summary (130); images/s
counts successes only."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.fixtures_reliability import REPO, NamedWorker, function_status, make_tiny_image, wait_for

from imgworker.testing.gearmand import Gearmand


def submit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgworker", "submit", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def dead_address() -> str:
    with Gearmand(persistent=False) as g:
        address = g.address
    return address  # that gearmand is gone: nothing listens there now


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    make_tiny_image(d / "a.jpg", fmt="jpeg", seed=1)
    make_tiny_image(d / "a.png", fmt="png", seed=2)
    make_tiny_image(d / "b.png", fmt="png", seed=3)
    return d


def test_two_sources_one_destination_is_refused_before_submitting(server: Gearmand, src: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = submit("--server", server.address, "--width", "16", "--format", "webp", f"{src}/", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "a.jpg" in proc.stderr and "a.png" in proc.stderr and "a.webp" in proc.stderr, proc.stderr
    assert "--keep-extension" in proc.stderr
    assert function_status(server.address, "resize") is None, "nothing may be submitted"
    assert not out.exists()


def test_keep_extension_gives_each_source_its_own_output(server: Gearmand, src: Path, tmp_path: Path,
                                                         worker_factory: Callable[..., NamedWorker]) -> None:
    worker_factory([server.address], [tmp_path]).wait_ready()
    out = tmp_path / "out"
    proc = submit("--server", server.address, "--width", "16", "--format", "webp", "--keep-extension",
                  f"{src}/", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["done"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.webp", "a.png.webp", "b.png.webp"]
    # Distinct sources, distinct bytes: nothing overwrote anything.
    assert len({p.read_bytes() for p in out.iterdir()}) == 3


def test_exit_codes_tell_failed_jobs_from_no_server(server: Gearmand, src: Path, tmp_path: Path,
                                                    worker_factory: Callable[..., NamedWorker]) -> None:
    worker_factory([server.address], [tmp_path]).wait_ready()
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    some_failed = submit("--server", server.address, "--width", "16", f"{src}/", str(tmp_path / "out"))
    assert some_failed.returncode == 1, some_failed.stderr
    summary = json.loads(some_failed.stdout)
    assert summary["done"] == 3 and sum(summary["failed"].values()) == 1
    # images/s counts the 3 images made, not the 4 jobs.
    assert summary["images_per_s"] <= 3 / summary["seconds"] * 1.05, summary

    nobody = dead_address()
    batch = submit("--server", nobody, "--width", "16", f"{src}/", str(tmp_path / "out2"))
    assert batch.returncode == 3 and "no job server reachable" in batch.stderr, (batch.returncode, batch.stderr)
    one = submit("--server", nobody, "--width", "16", str(src / "b.png"), str(tmp_path / "one.jpg"))
    assert one.returncode == 3, (one.returncode, one.stdout, one.stderr)
    assert json.loads(one.stdout)["error"]["code"] == "UNAVAILABLE"
    # A job that fails on a reachable server is 1, not 3.
    bad = submit("--server", server.address, "--width", "16", str(src / "broken.png"), str(tmp_path / "x.jpg"))
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] != "UNAVAILABLE"


def _default_sigint() -> None:
    # A suite started in the background (`./dev test &`) inherits SIGINT ignored, as every `&` job in a script
    # does; the command would then rightly ignore Ctrl-C. Give it a terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_prints_the_summary(server: Gearmand, src: Path, tmp_path: Path) -> None:
    """No worker: the jobs wait in gearmand; SIGINT (what Ctrl-C sends) ends the run with its summary."""
    proc = subprocess.Popen([sys.executable, "-m", "imgworker", "submit", "--server", server.address, "--width", "16",
                             f"{src}/", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, preexec_fn=_default_sigint)
    try:
        wait_for(lambda: getattr(function_status(server.address, "resize"), "queued", 0) == 3, 60, 0.05,
                 "the three jobs to be queued")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    summary = json.loads(stdout)
    assert summary["interrupted"] is True and summary["jobs"] == 3 and summary["not_finished"] == 3
    assert summary["done"] == 0 and summary["images_per_s"] == 0
    assert "Traceback" not in stderr, stderr


def test_quality_auto_from_the_command_line(server: Gearmand, tmp_path: Path,
                                            worker_factory: Callable[..., NamedWorker]) -> None:
    """``--quality auto:eco`` reaches the worker as the tier (a number stays a number)."""
    import shutil

    from support.corpus import photo

    worker_factory([server.address], [tmp_path]).wait_ready()
    src = tmp_path / "dragonfly.jpg"
    shutil.copy(photo("dragonfly"), src)
    proc = submit("--server", server.address, "--width", "300", "--quality", "auto:eco", str(src),
                  str(tmp_path / "o.jpg"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["auto"] == "auto:eco" and result["score"] >= 65, result
    proc = submit("--server", server.address, "--width", "300", "--quality", "70", str(src), str(tmp_path / "f.jpg"))
    assert proc.returncode == 0 and "auto" not in json.loads(proc.stdout), proc.stdout
