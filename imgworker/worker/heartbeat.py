"""A prefork child's heartbeat for its supervisor: a file whose mtime the job loop stamps about once a second.

The supervisor (process.py) kills a child whose stamp is older than ``--heartbeat-timeout``: a stopped
(SIGSTOP) or wedged process keeps its Gearman connections open, so gearmand would hold its jobs as running
forever; killed, its connections close and gearmand hands the jobs to other workers. A file, not a metric:
it works with ``--metrics-port 0``, and the supervisor reads it with one stat() and imports no metrics.
"""

from __future__ import annotations

import contextlib
import os
import time

_path: str | None = None


def stamp_to(path: str) -> None:
    """In the child: stamp ``path`` at every ``beat`` from now on (the first comes from the running job loop, so
    a child still starting is not taken for a silent one)."""
    global _path
    _path = path


def beat() -> None:
    if _path is not None:
        # A full disk or a removed directory must never stop the job loop: the supervisor then sees a silent
        # child and replaces it, which is the right outcome for a child that cannot write either.
        with contextlib.suppress(OSError), open(_path, "a"):
            os.utime(_path)


def age(path: str, since: float) -> float | None:
    """Seconds since the child at ``path`` last beat, or None if it has not beaten since ``since`` (Unix time:
    its start), i.e. is still starting."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    return None if mtime < since else time.time() - mtime
