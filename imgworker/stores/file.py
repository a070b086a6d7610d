"""``file://`` store: local (or mounted) files, confined to configured root directories.

Containment is checked on the fully resolved path (symlinks followed), so ``..`` and symlinks that escape a
root are refused; only regular files are read (no FIFOs, devices or /proc entries that would block or lie
about their size). Writes go to a temporary file in the destination directory and are renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import BadRequest, ForbiddenPath, LimitExceeded, SourceNotFound, StoreFailed
from .base import WriteOptions


def url_to_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise BadRequest(f"not a file:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise BadRequest(f"file:// URLs must be absolute with no host, like file:///data/in.jpg; got {url!r}")
    path = unquote(parts.path)
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

    def _resolve(self, url: str) -> Path:
        raw = url_to_path(url)
        # Resolve symlinks and ".." before the containment check: a link may point anywhere.
        resolved = Path(os.path.realpath(raw))
        for root in self.roots:
            if resolved == root or resolved.is_relative_to(root):
                return resolved
        if not self.roots:
            raise ForbiddenPath("no file:// roots are configured on this worker (--root DIR)")
        raise ForbiddenPath(f"{raw} is outside the allowed roots ({', '.join(map(str, self.roots))})")

    def check(self, url: str, *, write: bool = False) -> None:
        self._resolve(url)

    def read(self, url: str, *, max_bytes: int) -> bytes:
        path = self._resolve(url)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; non-regular files are refused below.
            # O_NOFOLLOW: ``path`` is already resolved, so a link here was swapped in after the root check.
            flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise SourceNotFound(f"source {url_to_path(url)} does not exist") from None
        except IsADirectoryError:
            raise SourceNotFound(f"source {url_to_path(url)} is a directory, not a file") from None
        except PermissionError:
            raise ForbiddenPath(f"source {url_to_path(url)} is not readable by the worker") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ForbiddenPath(f"source {url_to_path(url)} changed into a link while being opened") from None
            raise StoreFailed(f"cannot open source {url_to_path(url)}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ForbiddenPath(f"source {url_to_path(url)} is not a regular file")
            if st.st_size > max_bytes:
                raise LimitExceeded(f"source is {st.st_size} bytes; the limit is {max_bytes}")
            try:
                data = fh.read(max_bytes + 1)
            except OSError as exc:
                raise StoreFailed(f"cannot read source {url_to_path(url)}: {exc.strerror}") from None
        if len(data) > max_bytes:
            raise LimitExceeded(f"source grew past the limit of {max_bytes} bytes while being read")
        return data

    def write(self, url: str, data: bytes, options: WriteOptions) -> None:
        path = self._resolve(url)
        if path.is_dir():
            raise BadRequest(f"destination {path} is a directory; give a file name")
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Re-check after mkdir: a component created between check and use must still be inside a root.
            self._resolve(url)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
            tmp_name = None
        except PermissionError:
            raise StoreFailed(f"destination {path} is not writable by the worker", retryable=False) from None
        except OSError as exc:
            raise StoreFailed(f"cannot write destination {path}: {exc.strerror}", retryable=False) from None
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def exists(self, url: str) -> bool:
        return self._resolve(url).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._resolve(prefix)
        if not base.is_dir():
            raise SourceNotFound(f"{base} is not a directory")
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                # Skip links that leave the roots rather than failing the whole listing.
                with contextlib.suppress(ForbiddenPath):
                    self._resolve(full.as_uri())
                    yield full.as_uri()
