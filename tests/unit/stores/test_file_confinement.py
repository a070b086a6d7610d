"""file:// access: a job reads and writes only regular files inside the configured roots. Traversal, symlinks
that leave a root, device files, FIFOs (which must not hang the worker) and /proc are refused."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import pyvips
from support.fixtures_reliability import make_tiny_image

from imgworker.backends.cpu import CpuBackend
from imgworker.core.errors import ImgworkerError
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.stores import FileStore, Stores


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): an allowed root with an image, and a sibling directory the worker may not touch."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_tiny_image(root / "in" / "ok.png")
    make_tiny_image(outside / "secret.png")
    (root / "out").mkdir()
    return root, outside


def run(roots: list[Path | str], src: str, dst: str, timeout: float = 10.0) -> str:
    """The job's outcome code ("ok" or the error code), run with a hard timeout so a hang fails the test."""
    service = Service(Stores({"file": FileStore(roots)}), CpuBackend(), Limits())
    payload = json.dumps({"src": src, "dst": dst, "width": 16, "format": "png"}).encode()
    outcome: list[str] = []

    def job() -> None:
        try:
            service.handle(payload)
            outcome.append("ok")
        except ImgworkerError as exc:
            outcome.append(exc.code)

    t = threading.Thread(target=job, daemon=True)
    t.start()
    t.join(timeout)
    assert outcome, f"the job on {src} did not finish within {timeout} s"
    return outcome[0]


def test_a_plain_job_inside_the_root_works(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    assert run([root], (root / "in" / "ok.png").as_uri(), (root / "out" / "a.png").as_uri()) == "ok"


@pytest.mark.parametrize(
    "src",
    [
        "{root}/in/../../outside/secret.png",
        "{root}/../outside/secret.png",
        "{root}/in/%2e%2e/%2e%2e/outside/secret.png",
        "{root}/in/..%2f..%2foutside/secret.png",
        "/etc/passwd",
        "{root}/../../../../../../etc/passwd",
    ],
)
def test_traversal_is_refused(layout: tuple[Path, Path], src: str) -> None:
    root, _ = layout
    assert run([root], "file://" + src.format(root=root), (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"


def test_traversal_in_the_destination_writes_nothing_outside(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    before = sorted(os.listdir(outside))
    for dst in (f"file://{root}/out/../../outside/x.png", f"file://{root}/%2e%2e/outside/y.png"):
        assert run([root], (root / "in" / "ok.png").as_uri(), dst) == "FORBIDDEN_PATH"
    assert sorted(os.listdir(outside)) == before


def test_symlinks_that_leave_the_root_are_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (root / "in" / "link.png").symlink_to(outside / "secret.png")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    assert run([root], (root / "in" / "link.png").as_uri(), (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"
    assert run([root], f"file://{root}/escape/secret.png", (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"
    # A destination through a link out of the root: nothing is written there.
    assert run([root], (root / "in" / "ok.png").as_uri(), f"file://{root}/escape/new.png") == "FORBIDDEN_PATH"
    assert not (outside / "new.png").exists()


def test_a_symlink_inside_the_root_is_followed(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "in" / "alias.png").symlink_to(root / "in" / "ok.png")
    assert run([root], (root / "in" / "alias.png").as_uri(), (root / "out" / "b.png").as_uri()) == "ok"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_device_files_are_refused(layout: tuple[Path, Path], device: str) -> None:
    root, _ = layout
    (root / "in" / "dev.jpg").symlink_to(device)
    src = (root / "in" / "dev.jpg").as_uri()
    assert run([root], src, (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"
    # Even a (misguided) root of /dev itself reads no device: only regular files are read.
    assert run(["/dev", root], f"file://{device}", (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"
    # And a device as the destination is never opened for writing.
    assert run([root], (root / "in" / "ok.png").as_uri(), src) == "FORBIDDEN_PATH"


def test_a_fifo_source_is_refused_without_hanging(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    fifo = root / "in" / "pipe.jpg"
    os.mkfifo(fifo)
    # Nobody ever writes to it: a blocking open would hang the job thread forever.
    assert run([root], fifo.as_uri(), (root / "out" / "a.png").as_uri(), timeout=10) == "FORBIDDEN_PATH"


def test_a_fifo_destination_does_not_hang_and_is_replaced_by_a_file(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    fifo = root / "out" / "pipe.png"
    os.mkfifo(fifo)
    assert run([root], (root / "in" / "ok.png").as_uri(), fifo.as_uri(), timeout=10) == "ok"
    assert fifo.is_file() and pyvips.Image.new_from_file(str(fifo)).width == 16


def test_proc_is_out_of_reach(layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = layout
    (root / "in" / "env.jpg").symlink_to("/proc/self/environ")
    assert run([root], (root / "in" / "env.jpg").as_uri(), (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"
    assert run([root], "file:///proc/self/environ", (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"
    # With /proc wrongly configured as a root, its pseudo-files are read as bytes, fail to decode, and no byte
    # of them reaches the error message.
    marker = "imgworkerPROCmarker42"
    monkeypatch.setenv("IMGWORKER_TEST_MARKER", marker)
    service = Service(Stores({"file": FileStore(["/proc", root])}), CpuBackend(), Limits())
    payload = json.dumps({"src": "file:///proc/self/environ", "dst": (root / "out" / "a.png").as_uri(), "width": 8})
    with pytest.raises(ImgworkerError) as info:
        service.handle(payload.encode())
    assert info.value.code in ("UNSUPPORTED_IMAGE", "FORBIDDEN_PATH", "DECODE_FAILED")
    assert marker not in json.dumps(info.value.to_dict())


def test_a_worker_without_roots_refuses_every_file(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    assert run([], (root / "in" / "ok.png").as_uri(), (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"


@pytest.mark.parametrize("src", ["file://otherhost/etc/passwd", "file:relative.jpg", "file:///a/\u0000b.jpg"])
def test_malformed_file_urls_are_bad_requests(layout: tuple[Path, Path], src: str) -> None:
    root, _ = layout
    assert run([root], src, (root / "out" / "a.png").as_uri()) == "BAD_REQUEST"
