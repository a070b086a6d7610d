"""Stop libvips work at a job's deadline: ``set_kill`` on the images a job evaluates, from one watchdog thread.

libvips checks an image's kill flag each time a region of it is computed, so the flag must be on the image
that does the work: the loader's image (a 16000x16000 PNG shrunk to 64 px is one output tile but thousands
of loader strips), not only the small result. An "eval" progress handler on the result is not enough for the
same reason: it runs once per output tile. One thread for all jobs, woken at the nearest deadline: no thread
or timer per job. The pipeline engine can use the same ``kill_at`` around its evaluations.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyvips

from imgworker.core.deadline import Deadline
from imgworker.core.errors import JobTimeout
from imgworker.imaging.errors import translate


class _Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._images: dict[int, list[Any]] = {}
        self._cv = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, images: list[Any]) -> int:
        with self._cv:
            token = next(self._ids)
            self._images[token] = images
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imgworker-kill", daemon=True)
                self._thread.start()
            self._cv.notify()
        return token

    def cancel(self, token: int) -> None:
        with self._cv:
            self._images.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._heap and self._heap[0][1] not in self._images:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cv.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                images = self._images.pop(token, [])
            for image in images:
                with contextlib.suppress(Exception):
                    image.set_kill(True)


WATCHDOG = _Watchdog()


@contextlib.contextmanager
def kill_at(deadline: Deadline, *images: Any) -> Iterator[list[Any]]:
    """Within the block, the images in the yielded list (append more as they are made) are killed at
    ``deadline``; a libvips call on them then fails, and the caller reports TIMEOUT."""
    watched = list(images)
    token = WATCHDOG.watch(deadline.at, watched)
    try:
        yield watched
    finally:
        WATCHDOG.cancel(token)


def evaluate(image: pyvips.Image, deadline: Deadline, stage: str = "decode",
             watched: list[Any] | None = None) -> pyvips.Image:
    """``image`` computed into memory, stopped at ``deadline`` with JobTimeout: libvips'
    kill flag is set on ``image`` and on every image in ``watched`` (the loader's, which does the work)."""
    with kill_at(deadline, image, *(watched or ())):
        try:
            return image.copy_memory()
        except pyvips.Error as exc:
            if deadline.passed():
                raise JobTimeout(f"job passed its time limit during {stage}") from None
            raise translate(exc, "source") from None
