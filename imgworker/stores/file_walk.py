"""Resolve a path beneath a root directory from the root's descriptor, one component at a time.

``realpath`` then ``open`` can be raced: someone who can create links inside a root swaps a directory for a
symlink between the check and the use. Here every component is opened with ``openat(dir_fd, name,
O_NOFOLLOW)`` from a descriptor already known to be inside a root, so a component swapped for a link fails
to open (ELOOP/ENOTDIR) instead of being followed. Links the walk meets are followed by hand, and only to
targets inside a root; ``..`` steps back along the directories actually opened, never above the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from imgworker.core.errors import ForbiddenPath, SourceNotFound, StoreFailed

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
MAX_LINKS = 40  # as the kernel's own limit: a loop of links is refused, not walked forever
# Errors of the process or the system, not of the path: worth a retry, and a sign this worker is unwell.
RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN}


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def os_error(exc: OSError, what: str) -> StoreFailed:
    """A store error for an OS error: resource errors (fds, disk, quota) are retryable, the rest are not."""
    return StoreFailed(f"{what}: {exc.strerror}", retryable=exc.errno in RESOURCE_ERRNOS, errno=exc.errno)


@dataclass
class Beneath:
    """The directory that holds ``name`` (an open descriptor inside a root) and the last component's name."""

    dir_fd: int
    name: str


class Walker:
    """Walks paths under ``roots`` (resolved, absolute); ``create`` makes missing directories on the way."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = [split(r) for r in roots]

    def _root_of(self, parts: list[str]) -> tuple[list[str], list[str]] | None:
        best: list[str] | None = None
        for root in self.roots:
            if parts[: len(root)] == root and (best is None or len(root) > len(best)):
                best = root
        if best is not None:
            return best, parts[len(best):]
        # The path may name a root through another spelling (a symlinked mount point): the longest prefix
        # that resolves to a root exactly. Only the root itself is opened by that name; the rest is walked.
        for i in range(len(parts) - 1, 0, -1):
            real = split(os.path.realpath("/" + "/".join(parts[:i])))
            if real in self.roots:
                return real, parts[i:]
        return None

    @contextlib.contextmanager
    def parent(self, path: str, *, create: bool = False, follow_last: bool = True) -> Iterator[Beneath]:
        """The directory holding ``path``'s last component, opened beneath a root; closed on exit."""
        opened: list[int] = []
        try:
            yield self._walk(path, opened, create=create, follow_last=follow_last)
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _start(self, path: str, opened: list[int]) -> tuple[list[int], list[str]]:
        found = self._root_of(split(path))
        if found is None:
            raise ForbiddenPath(f"{path} is outside the allowed roots")
        root, rest = found
        try:
            fd = os.open("/" + "/".join(root), _DIR_FLAGS)
        except OSError as exc:
            raise os_error(exc, "cannot open a configured root") from None
        opened.append(fd)
        return [fd], rest

    def _walk(self, path: str, opened: list[int], *, create: bool, follow_last: bool) -> Beneath:
        stack, todo = self._start(path, opened)
        todo.reverse()  # popped from the end
        links = 0
        if not todo:
            raise ForbiddenPath(f"{path} is a root directory itself, not a file in it")
        while True:
            name = todo.pop()
            if name == "..":
                if len(stack) == 1:
                    raise ForbiddenPath(f"{path} leads outside the allowed roots")
                stack.pop()
                if not todo:
                    raise ForbiddenPath(f"{path} names a directory, not a file")
                continue
            last = not todo
            target = self._link(stack[-1], name) if (follow_last or not last) else None
            if target is not None:
                links += 1
                if links > MAX_LINKS:
                    raise ForbiddenPath(f"{path}: too many levels of symbolic links")
                if target.startswith("/"):
                    stack, rest = self._start(target, opened)
                    todo.extend(reversed(rest))
                else:
                    todo.extend(reversed(split(target)))
                if not todo:
                    raise ForbiddenPath(f"{path} names a directory, not a file")
                continue
            if last:
                return Beneath(stack[-1], name)
            stack.append(self._open_dir(stack[-1], name, path, opened, create=create))

    @staticmethod
    def _link(dir_fd: int, name: str) -> str | None:
        """The target if ``name`` is a symlink in ``dir_fd``, else None (absent, or anything else)."""
        try:
            return os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return None
            if exc.errno == errno.ENOTDIR:
                raise ForbiddenPath("a directory on the path changed while it was being opened") from None
            raise os_error(exc, "cannot read a link on the path") from None

    def _open_dir(self, dir_fd: int, name: str, path: str, opened: list[int], *, create: bool) -> int:
        for _ in range(2):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                if not create:
                    raise SourceNotFound(f"{path} does not exist") from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=dir_fd)
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    if _is_link(dir_fd, name):  # swapped for a link after it was looked at: never followed
                        raise ForbiddenPath(f"{path}: a directory on the path changed into a link") from None
                    if create:
                        raise StoreFailed(f"cannot write destination {path}: a file is in the way of a "
                                          "directory", retryable=False) from None
                    raise SourceNotFound(f"{path} does not exist (a file is in the way of a directory)") from None
                if exc.errno == errno.EACCES:
                    raise ForbiddenPath(f"{path}: a directory on the path is not readable by the worker") from None
                raise os_error(exc, f"cannot open a directory of {path}") from None
            opened.append(fd)
            return fd
        raise StoreFailed(f"cannot create a directory of {path}")


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
