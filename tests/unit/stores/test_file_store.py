"""The file:// store itself (docs/security.md, "Files"): URLs to paths, reads and writes confined to the roots,
exact errors. test_file_confinement.py runs the same rules through whole jobs; this file calls the store."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from imgworker.core.errors import BadRequest, ForbiddenPath, LimitExceeded, SourceNotFound, StoreFailed
from imgworker.stores import FileStore, WriteOptions
from imgworker.stores.file import url_to_path
from imgworker.stores.file_walk import MAX_LINKS, os_error, split

OPTS = WriteOptions("image/png")


@pytest.mark.parametrize(("url", "path"), [
    ("file:///data/in.jpg", "/data/in.jpg"),
    ("file://localhost/data/in.jpg", "/data/in.jpg"),
    ("file:///a%20b/%C3%A9.jpg", "/a b/\u00e9.jpg"),
    ("file:///" + "n" * 255, "/" + "n" * 255),
])
def test_urls_to_paths(url: str, path: str) -> None:
    assert url_to_path(url) == path


@pytest.mark.parametrize(("url", "message"), [
    ("s3://b/k", "not a file:// URL: 's3://b/k'"),
    ("file://host/x", "file:// URLs must be absolute with no host, like file:///data/in.jpg; got 'file://host/x'"),
    ("file:///a%ff", "file:// URL has a %-escape that is not UTF-8: 'file:///a%ff'"),
    ("file:relative", "file:// URL must hold an absolute path, got 'file:relative'"),
    ("file:///a%00b", "file:// URL must hold an absolute path, got 'file:///a%00b'"),
    ("file:///a\ud800", "file:// URL holds characters that are not valid in a path"),
    ("file:///" + "n" * 256, "file:// path is too long (limits: 255 bytes a name, 4095 in all)"),
    ("file:///" + "/".join(["n" * 200] * 21), "file:// path is too long"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        url_to_path(url)
    assert info.value.message.startswith(message), info.value.message


def test_split_and_os_errors() -> None:
    assert split("/a//b/./c/") == ["a", "b", "c"] and split("/") == []
    full = os_error(OSError(errno.ENOSPC, "No space left on device"), "cannot write x")
    assert (full.message, full.retryable, full.details) == ("cannot write x: No space left on device", True,
                                                            {"errno": errno.ENOSPC})
    assert os_error(OSError(errno.EROFS, "Read-only file system"), "w").retryable is False


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "in").mkdir(parents=True)
    (tmp_path / "root" / "in" / "a.bin").write_bytes(b"0123456789")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.bin").write_bytes(b"secret")
    return tmp_path / "root"


def test_read_write_exists_and_list(root: Path) -> None:
    store = FileStore([root])
    assert store.read((root / "in" / "a.bin").as_uri(), max_bytes=10) == b"0123456789"  # exactly the limit
    with pytest.raises(LimitExceeded, match=r"^source is 10 bytes; the limit is 9$"):
        store.read((root / "in" / "a.bin").as_uri(), max_bytes=9)
    (root / "in" / "empty.bin").write_bytes(b"")
    assert store.read((root / "in" / "empty.bin").as_uri(), max_bytes=10) == b""
    dst = root / "out" / "deep" / "b.png"
    store.write(dst.as_uri(), b"PNG", OPTS)  # missing folders are made
    assert dst.read_bytes() == b"PNG" and stat.S_IMODE(dst.stat().st_mode) == 0o644
    assert [p.name for p in dst.parent.iterdir()] == ["b.png"]  # no temporary file left
    store.write(dst.as_uri(), b"PNG2", OPTS)  # replaced
    assert dst.read_bytes() == b"PNG2"
    assert store.exists(dst.as_uri()) and not store.exists((root / "out" / "nope.png").as_uri())
    assert not store.exists((root / "out" / "deep").as_uri())  # a folder is not an object
    assert not store.exists((root / "nofolder" / "x").as_uri())
    (root / "in" / ".hidden").write_bytes(b"h")
    (root / "in" / "sub").mkdir()
    (root / "in" / "sub" / "c.bin").write_bytes(b"c")
    (root / "in" / "away.bin").symlink_to(root.parent / "outside" / "secret.bin")
    assert list(store.list((root / "in").as_uri())) == [
        (root / "in" / n).as_uri() for n in ("a.bin", "empty.bin", "sub/c.bin")]
    assert list(store.list(root.as_uri())) == [  # a root itself may be listed
        (root / p).as_uri() for p in ("in/a.bin", "in/empty.bin", "in/sub/c.bin", "out/deep/b.png")]
    with pytest.raises(SourceNotFound, match="is not a directory"):
        list(store.list((root / "in" / "a.bin").as_uri()))
    with pytest.raises(ForbiddenPath):
        list(store.list((root.parent / "outside").as_uri()))


def test_the_errors_of_reads_and_writes(root: Path) -> None:
    store = FileStore([root])
    with pytest.raises(SourceNotFound, match=r"^source .*/in/none\.bin does not exist$"):
        store.read((root / "in" / "none.bin").as_uri(), max_bytes=10)
    with pytest.raises(SourceNotFound, match=r"does not exist$"):
        store.read((root / "nofolder" / "x.bin").as_uri(), max_bytes=10)
    with pytest.raises(SourceNotFound, match=r"is a directory, not a file$"):
        store.read((root / "in").as_uri(), max_bytes=10)
    with pytest.raises(SourceNotFound, match=r"a file is in the way of a directory"):
        store.read((root / "in" / "a.bin" / "x").as_uri(), max_bytes=10)
    with pytest.raises(StoreFailed, match=r"a file is in the way of a directory") as info:
        store.write((root / "in" / "a.bin" / "x.png").as_uri(), b"x", OPTS)
    assert info.value.retryable is False
    with pytest.raises(BadRequest, match=r"is a directory; give a file name$"):
        store.write((root / "in").as_uri(), b"x", OPTS)
    with pytest.raises(BadRequest, match=r"ends in '/': give a file name"):
        store.write((root / "in").as_uri() + "/", b"x", OPTS)
    with pytest.raises(ForbiddenPath, match=r"is a root directory itself, not a file in it$"):
        store.read(root.as_uri(), max_bytes=10)
    with pytest.raises(ForbiddenPath, match=r"leads outside the allowed roots$"):
        store.read(root.as_uri() + "/../outside/secret.bin", max_bytes=10)
    with pytest.raises(ForbiddenPath, match=r"is outside the allowed roots$"):
        store.read((root.parent / "outside" / "secret.bin").as_uri(), max_bytes=10)
    with pytest.raises(ForbiddenPath, match=r"names a directory, not a file$"):
        store.read(root.as_uri() + "/in/..", max_bytes=10)
    with pytest.raises(ForbiddenPath, match=r"^no file:// roots are configured on this worker \(--root DIR\)$"):
        FileStore([]).read((root / "in" / "a.bin").as_uri(), max_bytes=10)


def test_links_inside_the_roots_are_followed_and_loops_refused(root: Path) -> None:
    store = FileStore([root])
    (root / "in" / "rel.bin").symlink_to("a.bin")
    (root / "in" / "abs.bin").symlink_to(root / "in" / "a.bin")
    (root / "alias").symlink_to(root / "in", target_is_directory=True)
    (root / "up").symlink_to("in/../in", target_is_directory=True)
    for name in ("in/rel.bin", "in/abs.bin", "alias/a.bin", "up/a.bin"):
        assert store.read(root.as_uri() + "/" + name, max_bytes=10) == b"0123456789", name
    (root / "in" / "loop1").symlink_to("loop2")
    (root / "in" / "loop2").symlink_to("loop1")
    with pytest.raises(ForbiddenPath, match=r"too many levels of symbolic links$"):
        store.read((root / "in" / "loop1").as_uri(), max_bytes=10)
    chain = root / "in" / "c0"
    for i in range(MAX_LINKS):  # 40 links in a row: allowed, as the kernel allows
        (root / "in" / f"c{i}").symlink_to(f"c{i + 1}")
    (root / "in" / f"c{MAX_LINKS}").write_bytes(b"end")
    assert store.read(chain.as_uri(), max_bytes=10) == b"end"
    (root / "in" / f"c{MAX_LINKS}").unlink()
    (root / "in" / f"c{MAX_LINKS}").symlink_to("a.bin")  # one more: refused
    with pytest.raises(ForbiddenPath, match=r"too many levels"):
        store.read(chain.as_uri(), max_bytes=10)
    (root / "in" / "dirlink").symlink_to(".", target_is_directory=True)
    with pytest.raises(ForbiddenPath, match=r"names a directory, not a file$"):
        store.read((root / "in" / "dirlink").as_uri() + "/", max_bytes=10)
    # A root reached through another spelling (a link to it) is still that root.
    other = root.parent / "mount"
    other.symlink_to(root, target_is_directory=True)
    assert store.read((other / "in" / "a.bin").as_uri(), max_bytes=10) == b"0123456789"



def test_what_the_store_leaves_and_says(root: Path) -> None:
    store = FileStore([root])
    fifo = root / "in" / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ForbiddenPath) as info:
        store.read(fifo.as_uri(), max_bytes=10)
    assert info.value.message == f"source {fifo} is not a regular file"
    (root / "out").mkdir()
    (root / "out" / "XXXX").write_bytes(b"keep")  # a file whose name a careless clean-up could hit
    store.write((root / "out" / "a.png").as_uri(), b"PNG", OPTS)
    assert sorted(p.name for p in (root / "out").iterdir()) == ["XXXX", "a.png"]
    store.check((root / "out").as_uri() + "/")  # a folder URL is fine to read from (a listing's prefix)
    long = (root / "out").as_uri() + "/" + "d" * 250 + "/"
    with pytest.raises(BadRequest) as bad:
        store.check(long, write=True)
    assert bad.value.message == f"dst {long[:200]!r} ends in '/': give a file name (a directory is not a file)"


def test_a_source_over_a_mebibyte_is_read_whole(root: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 7)
    (root / "in" / "big.bin").write_bytes(data)
    store = FileStore([root])
    assert store.read((root / "in" / "big.bin").as_uri(), max_bytes=len(data)) == data
    with pytest.raises(LimitExceeded, match=f"^source is {len(data)} bytes; the limit is {len(data) - 1}$"):
        store.read((root / "in" / "big.bin").as_uri(), max_bytes=len(data) - 1)


# --- system errors, injected: root may read and write anywhere and the disk is healthy, so the store's
# handling of EACCES, ELOOP, EIO and ENOSPC is checked by making one os call fail (a double for one module). ---

def _failing(real: object, errno_: int, when: object) -> object:
    def call(*args: object, **kw: object) -> object:
        if when(*args):  # type: ignore[operator]
            raise OSError(errno_, os.strerror(errno_))
        return real(*args, **kw)  # type: ignore[operator]
    return call


@pytest.mark.parametrize(("errno_", "error", "message", "retryable"), [
    (errno.EACCES, ForbiddenPath, "source {p} is not readable by the worker", False),
    (errno.ELOOP, ForbiddenPath, "source {p} changed into a link while being opened", False),
    (errno.EIO, StoreFailed, "cannot open source {p}: Input/output error", True),
])
def test_errors_opening_a_source(root: Path, monkeypatch: pytest.MonkeyPatch, errno_: int, error: type,
                                 message: str, retryable: bool) -> None:
    path = root / "in" / "a.bin"
    monkeypatch.setattr(os, "open", _failing(os.open, errno_, lambda name, *a: name == "a.bin"))
    with pytest.raises(error) as info:  # type: ignore[var-annotated]
        FileStore([root]).read(path.as_uri(), max_bytes=10)
    assert (info.value.message, info.value.retryable) == (message.format(p=path), retryable)


def test_an_error_reading_a_source(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = root / "in" / "a.bin"
    monkeypatch.setattr(os, "read", _failing(os.read, errno.EIO, lambda *a: True))
    with pytest.raises(StoreFailed) as info:
        FileStore([root]).read(path.as_uri(), max_bytes=10)
    assert (info.value.message, info.value.retryable) == (f"cannot read source {path}: Input/output error", True)


@pytest.mark.parametrize(("call", "errno_", "message", "retryable"), [
    ("write", errno.ENOSPC, "cannot write destination {p}: No space left on device", True),
    ("rename", errno.EIO, "cannot write destination {p}: Input/output error", True),
    ("open", errno.EACCES, "destination {p} is not writable by the worker", False),
    ("open", errno.EROFS, "destination {p} is not writable by the worker", False),
])
def test_errors_writing_leave_nothing_behind(root: Path, monkeypatch: pytest.MonkeyPatch, call: str, errno_: int,
                                             message: str, retryable: bool) -> None:
    dst = root / "in" / "new.png"
    when = {"write": lambda *a: True, "rename": lambda *a: True,
            "open": lambda name, *a: str(name).endswith(".part")}[call]
    monkeypatch.setattr(os, call, _failing(getattr(os, call), errno_, when))
    with pytest.raises(StoreFailed) as info:
        FileStore([root]).write(dst.as_uri(), b"PNG", OPTS)
    monkeypatch.undo()
    assert (info.value.message, info.value.retryable) == (message.format(p=dst), retryable)
    assert sorted(p.name for p in (root / "in").iterdir()) == ["a.bin"]  # no temporary file, no half result
