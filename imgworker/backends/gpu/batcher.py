"""Micro-batching: gather jobs submitted from many threads into small batches for one GPU call.

The worker runs each Gearman job on its own thread and calls ``backend.resize()``; the backend submits to a
MicroBatcher, whose thread takes the first waiting item, then waits at most ``max_wait_ms`` for up to
``max_batch - 1`` more, runs them as one batch and answers each caller separately (its result or its own
exception). A lone job is therefore delayed by at most ``max_wait_ms``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """``submit(item)`` blocks until ``run_batch`` has produced that item's result (or raises its error)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R | BaseException]],
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        name: str = "gpu-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.batch_sizes: list[int] = []  # recent batch sizes, for metrics and tests
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit_async(self, item: T) -> Future[R]:
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        fut: Future[R] = Future()
        self._queue.put((item, fut))
        return fut

    def submit(self, item: T, timeout: float | None = None) -> R:
        return self.submit_async(item).result(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish queued items, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def __enter__(self) -> MicroBatcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, first: tuple[T, Future[R]]) -> tuple[list[tuple[T, Future[R]]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._queue.get_nowait() if left <= 0 else self._queue.get(timeout=left)
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)  # type: ignore[arg-type]
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)  # type: ignore[arg-type]
            # Skip callers that gave up (Future cancelled) so a timed-out job costs no GPU time.
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batch_sizes = [*self.batch_sizes[-999:], len(live)]
            try:
                results = list(self.run_batch([item for item, _ in live]))
                if len(results) != len(live):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
            except BaseException as exc:  # a whole-batch failure goes to every caller in it
                results = [exc] * len(live)
            for (_, fut), res in zip(live, results, strict=True):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)


def run_shrinking(
    run: Callable[[Sequence[T]], list[R | BaseException]],
    items: Sequence[T],
    is_oom: Callable[[BaseException], bool],
    on_oom: Callable[[], None] = lambda: None,
    fallback: Callable[[T, BaseException], R | BaseException] | None = None,
) -> list[R | BaseException]:
    """Run ``items`` as one batch; on out-of-memory, halve the batch and retry each half.

    ``run`` may raise an OOM for the whole batch. ``on_oom`` frees cached memory before a retry. An item
    that runs out of memory on its own goes to ``fallback`` (e.g. the CPU backend) or returns the error.
    """
    try:
        return run(items)
    except BaseException as exc:
        if not is_oom(exc):
            raise
        on_oom()
        if len(items) == 1:
            return [fallback(items[0], exc) if fallback else exc]
        mid = len(items) // 2
        return run_shrinking(run, items[:mid], is_oom, on_oom, fallback) + run_shrinking(
            run, items[mid:], is_oom, on_oom, fallback
        )
