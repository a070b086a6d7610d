"""The command line as users run it: `imgworker submit` (one job, a directory), prefork (the demo: test_demo.py)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image
from support.corpus import PHOTOS, photo
from support.workerproc import REPO, WorkerProc

from imgworker.testing.gearmand import Gearmand


def imgworker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgworker", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_submit_one_job_and_a_failure(core_worker: WorkerProc, core_root: Path) -> None:
    server = core_worker.servers[0]
    dst = core_root / "out" / "submit_one.webp"
    ok = imgworker("submit", "--server", server, "--width", "128", str(photo("webp")), str(dst))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["width"] == 128 and dst.read_bytes()[:4] == b"RIFF"
    bad = imgworker("submit", "--server", server, "--width", "128", "/etc/hostname", str(dst))
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] == "FORBIDDEN_PATH"


def test_submit_a_directory_reports_a_summary(core_worker: WorkerProc, core_root: Path) -> None:
    src = core_root / "in" / "batch"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for p in sorted(PHOTOS.glob("dragonfly*")):
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = core_root / "out" / "batch"
    proc = imgworker(
        "submit", "--server", core_worker.servers[0], "--width", "100", "--format", "png", str(src) + "/", str(out)
    )
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1  # one job failed
    assert summary["jobs"] == 4 and summary["done"] == 3 and summary["failed"] == {"DECODE_FAILED": 1}
    assert summary["images_per_s"] > 0
    outputs = sorted(p.name for p in out.iterdir())
    assert outputs == sorted(p.stem + ".png" for p in PHOTOS.glob("dragonfly*"))
    for p in out.iterdir():
        assert Image.open(p).size == (100, 75)


def test_prefork_group_serves_and_stops_cleanly(tmp_path: Path) -> None:
    with Gearmand() as g:
        worker = WorkerProc([g.address], [PHOTOS, tmp_path], processes=2, concurrency=1)
        worker.start()
        worker.wait_registered("resize", count=2)  # both children registered
        from imgworker import Client

        with Client([g.address]) as client:
            r = client.resize(
                src=photo("baseline").as_uri(), dst=(tmp_path / "k.jpg").as_uri(), width=64
            )
        assert r.width == 64
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=40) == 0
        assert worker.log().count("worker stopped cleanly") == 2


def test_submit_a_directory_with_symlinks_and_spaces(core_worker: WorkerProc, core_root: Path) -> None:
    src = core_root / "in" / "with space"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for k in range(2):  # two names for one file: two jobs, two outputs
        (src / f"copy {k}.jpg").symlink_to(photo("png_named_jpg"))
    out = core_root / "out" / "spaced"
    proc = imgworker("submit", "--server", core_worker.servers[0], "--width", "40", str(src) + "/", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["done"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["copy 0.jpg", "copy 1.jpg"]
