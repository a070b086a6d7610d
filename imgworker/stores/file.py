"""``file://`` store: local (or mounted) files, confined to configured root directories.

Every path is walked from its root's directory descriptor, component by component (stores/file_walk.py), so
``..`` and symlinks that leave a root are refused and a directory swapped for a link mid-job is never
followed. Only regular files are read (no FIFOs, devices or /proc entries that would block or lie about their
size). Writes go to a temporary file in the destination directory, created and renamed through that
directory's descriptor, so the temporary file and the result both land where the check said.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imgworker.core.errors import BadRequest, ForbiddenPath, LimitExceeded, SourceNotFound, StoreFailed
from imgworker.stores.base import WriteOptions
from imgworker.stores.file_walk import Walker, os_error

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def url_to_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise BadRequest(f"not a file:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise BadRequest(f"file:// URLs must be absolute with no host, like file:///data/in.jpg; got {url!r}")
    try:
        # errors="strict": "%ff" is not silently turned into U+FFFD (a different name than the one asked for).
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"file:// URL has a %-escape that is not UTF-8: {url[:200]!r}") from None
    if not path.startswith("/") or "\x00" in path:
        raise BadRequest(f"file:// URL must hold an absolute path, got {url!r}")
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:
        raise BadRequest(f"file:// URL holds characters that are not valid in a path: {url[:200]!r}") from None
    # Over-long names make stat() raise ENAMETOOLONG deep inside pathlib: refuse them up front.
    if len(encoded) > 4095 or any(len(part) > 255 for part in encoded.split(b"/")):
        raise BadRequest(f"file:// path is too long (limits: 255 bytes a name, 4095 in all): {url[:200]!r}")
    return path


class FileStore:
    scheme = "file"

    def __init__(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self._walker = Walker([str(r) for r in self.roots])

    def _path(self, url: str) -> str:
        path = url_to_path(url)
        if not self.roots:
            raise ForbiddenPath("no file:// roots are configured on this worker (--root DIR)")
        return path

    def check(self, url: str, *, write: bool = False) -> None:
        path = self._path(url)
        if write and path.endswith("/"):
            raise BadRequest(f"dst {url[:200]!r} ends in '/': give a file name (a directory is not a file)")
        # The same walk as read/write (so ".." and links out of a root are refused before any work); a
        # directory that does not exist yet is fine here: a write creates it, a read reports it missing.
        with contextlib.suppress(SourceNotFound), self._walker.parent(path):
            pass

    def read(self, url: str, *, max_bytes: int) -> bytes:
        path = self._path(url)
        with self._walker.parent(path) as where:
            try:
                # O_NONBLOCK: opening a FIFO must not wait for a writer; non-regular files are refused below.
                fd = os.open(where.name, _READ_FLAGS, dir_fd=where.dir_fd)
            except FileNotFoundError:
                raise SourceNotFound(f"source {path} does not exist") from None
            except PermissionError:
                raise ForbiddenPath(f"source {path} is not readable by the worker") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ForbiddenPath(f"source {path} changed into a link while being opened") from None
                raise os_error(exc, f"cannot open source {path}") from None
        try:
            return _read_fd(fd, path, max_bytes)
        finally:
            os.close(fd)

    def write(self, url: str, data: bytes, options: WriteOptions) -> None:
        path = self._path(url)
        self.check(url, write=True)
        try:
            with self._walker.parent(path, create=True) as where:
                _replace(where.dir_fd, where.name, data, path)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StoreFailed(f"destination {path} is not writable by the worker", retryable=False) from None
            raise os_error(exc, f"cannot write destination {path}") from None

    def exists(self, url: str) -> bool:
        try:
            with self._walker.parent(self._path(url)) as where:
                st = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
        except (SourceNotFound, FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(st.st_mode)

    def list(self, prefix: str) -> Iterator[str]:
        base = Path(os.path.realpath(self._path(prefix)))
        if base not in self.roots:  # a root may be listed; the walk refuses it only as a file to open
            self.check(base.as_uri())
        if not base.is_dir():
            raise SourceNotFound(f"{base} is not a directory")
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                # Skip links that leave the roots rather than failing the whole listing (reads walk again).
                with contextlib.suppress(ForbiddenPath):
                    self.check(Path(os.path.realpath(full)).as_uri())
                    yield full.as_uri()


def _read_fd(fd: int, path: str, max_bytes: int) -> bytes:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise SourceNotFound(f"source {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ForbiddenPath(f"source {path} is not a regular file")
    if st.st_size > max_bytes:
        raise LimitExceeded(f"source is {st.st_size} bytes; the limit is {max_bytes}")
    # One read of the size fstat gave (one buffer, one copy: 1 MiB chunks joined cost twice the page faults
    # and a second copy, ~1 ms of a 2 MB source), then chunks only if the file grew meanwhile.
    chunks: list[bytes] = []
    total = 0
    want = min(st.st_size, max_bytes) + 1
    try:
        while total <= max_bytes:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = min(1 << 20, max_bytes + 1 - total)
    except OSError as exc:
        raise os_error(exc, f"cannot read source {path}") from None
    if total > max_bytes:
        raise LimitExceeded(f"source grew past the limit of {max_bytes} bytes while being read")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replace(dir_fd: int, name: str, data: bytes, path: str) -> None:
    """Write ``name`` in ``dir_fd`` atomically: a temporary file there, fsync, rename over ``name``."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise BadRequest(f"destination {path} is a directory; give a file name")
    tmp = f".{name[:200]}.{secrets.token_hex(4)}.part"
    fd = os.open(tmp, _TEMP_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: readers (a web server) may not run as the worker
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        # Both names relative to the same descriptor: the rename happens in the directory that was checked.
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        tmp = ""
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
