"""file:// access: a job reads and writes only regular files inside the configured roots. Traversal, symlinks
that leave a root, device files, FIFOs (which must not hang the worker) and /proc are refused."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
import pyvips
from support.fixtures_reliability import make_tiny_image
from support.tools import require_privilege

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


# The host's /dev/null, /dev/zero and /dev/urandom, as (major, minor): the test makes nodes of its own with these
# numbers in its temp folder, so a confinement that fails reads zeros or writes into a node it owns; before,
# symlinks into the host's /dev let a broken confinement (as root) replace /dev/null with a PNG.
DEVICES = {"null": (1, 3), "zero": (1, 5), "urandom": (1, 9)}


def make_device(path: Path, name: str) -> Path:
    """A character device node at ``path`` with the numbers of the host's /dev/``name`` (needs CAP_MKNOD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(*DEVICES[name]))
    except PermissionError:
        require_privilege("making device nodes (mknod) needs root or CAP_MKNOD", "run the tests as root")
    return path


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_device_files_are_refused(layout: tuple[Path, Path], device: str) -> None:
    root, outside = layout
    node = make_device(root / "in" / "dev.jpg", device)
    devroot = outside / "dev"  # a (misguided) root holding only device nodes, like /dev
    own = make_device(devroot / device, device)
    out = (root / "out" / "a.png").as_uri()
    assert run([root], node.as_uri(), out) == "FORBIDDEN_PATH"
    # Even a root of device nodes itself reads no device: only regular files are read.
    assert run([devroot, root], own.as_uri(), out) == "FORBIDDEN_PATH"
    assert not (root / "out" / "a.png").exists()
    # A destination linked to a device outside the roots is refused, and the device is left as it was.
    (root / "out" / "link.png").symlink_to(own)
    ok = (root / "in" / "ok.png").as_uri()
    assert run([root], ok, (root / "out" / "link.png").as_uri()) == "FORBIDDEN_PATH"
    assert stat.S_ISCHR(own.lstat().st_mode) and own.lstat().st_rdev == os.makedev(*DEVICES[device])
    # A device inside a root as the destination is never opened (it would swallow the output): like a FIFO
    # (docs/security.md), it is replaced by the output file.
    assert run([root], ok, node.as_uri()) == "ok"
    assert stat.S_ISREG(node.lstat().st_mode) and pyvips.Image.new_from_file(str(node)).width == 16


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
    assert info.value.code == "UNSUPPORTED_IMAGE"  # read (a regular file), and not an image
    assert marker not in json.dumps(info.value.to_dict())


def test_a_worker_without_roots_refuses_every_file(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    assert run([], (root / "in" / "ok.png").as_uri(), (root / "out" / "a.png").as_uri()) == "FORBIDDEN_PATH"


@pytest.mark.parametrize("src", ["file://otherhost/etc/passwd", "file:relative.jpg", "file:///a/\u0000b.jpg"])
def test_malformed_file_urls_are_bad_requests(layout: tuple[Path, Path], src: str) -> None:
    root, _ = layout
    assert run([root], src, (root / "out" / "a.png").as_uri()) == "BAD_REQUEST"
