"""Start a coroutine as a task that runs synchronously up to its first suspension ("eager" start).

A worker handler that finishes without suspending (or the first part of one that does) then runs inside
the read callback that delivered its job, so the result and the next GRAB leave in that callback's write
instead of one event-loop pass later. Python 3.12+ has this built in (``Task(eager_start=True)``); on 3.11
we emulate it: the task object is created first and made current (so ``asyncio.current_task()``,
``asyncio.timeout()`` and cancellation see the real task), the coroutine's first step runs in the task's
context, and the task then resumes the coroutine from wherever it suspended.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

_NATIVE = sys.version_info >= (3, 12)


def eager_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    if _NATIVE:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    if asyncio.current_task(loop) is not None:  # called from a task: no second current task possible
        return loop.create_task(coro)
    ctx = contextvars.copy_context()
    resume = _Resume(coro)
    task = loop.create_task(resume, context=ctx)
    asyncio.tasks._enter_task(loop, task)
    try:
        ctx.run(resume.first_step)
    finally:
        asyncio.tasks._leave_task(loop, task)
    return task


class _Resume(Coroutine[Any, Any, Any]):
    """Runs the first step of ``coro`` now; the task then drives this object, which resumes ``coro``.

    A coroutine-protocol object rather than an ``async def`` wrapper, so that an exception thrown in before
    the task's first step (cancellation) reaches ``coro`` too.
    """

    __slots__ = ("coro", "done", "error", "first", "value", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.done = False
        self.first = True
        self.value: Any = None
        self.error: BaseException | None = None
        self.yielded: Any = None

    def first_step(self) -> None:
        try:
            self.yielded = self.coro.send(None)
        except StopIteration as e:
            self.done, self.value = True, e.value
        except BaseException as e:  # re-raised in the task by send()
            self.done, self.error = True, e

    def send(self, value: Any) -> Any:
        if self.first:
            # The task's first step: report how the eager step ended.
            self.first = False
            if self.done:
                err, self.error = self.error, None
                if err is not None:
                    raise err
                raise StopIteration(self.value)
            yielded, self.yielded = self.yielded, None
            return yielded  # a future (or None for a bare yield): the task waits on it as usual
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.first:
            # Cancelled before its first step: cancel what the coroutine waits on, as the task would have.
            self.first = False
            if isinstance(self.yielded, asyncio.Future):
                self.yielded.cancel()
            self.yielded = None
        if self.done:
            raise typ if val is None else val
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)  # pragma: no cover - legacy three-argument form

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        raise TypeError("_Resume is driven by its task, not awaited")  # pragma: no cover
