"""The base class of a job's lifecycle hooks, and the state of one job that they share.

A hook overrides the phases it needs; every phase here does nothing. The worker calls each phase on every hook
of the list in list order (chain.py), so a hook may read what an earlier one left on the job (``elapsed``,
``background``). Phases, in the order a job meets them:

- ``before_job``: on the event loop, once, right after the payload is decoded.
- ``admit``: in the job's thread, before each run of the work; raising an ImgworkerError refuses the job (the
  error becomes the run's result, as any job error does).
- ``after_run``: after each run, with its result in ``job.result`` and its duration.
- ``run_again``: after each run; True runs the work again (the first hook to say so wins; later ones are not
  asked).
- ``after_work``: once no run follows, also when the job is cancelled (a shutdown past the drain deadline hands
  it back to the job server): then ``job.result`` is empty.
- ``after_job``: once the result is final, before WORK_COMPLETE. An exception is logged, never changes the
  result, and does not stop the hooks after it.
- ``close``: at shutdown, after the drain.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from imgworker.core.contract import Payload


@dataclass(eq=False)
class JobState:
    """One job as the hooks see it: what came in, the result so far, and what hooks learned about it."""

    function: str  # the Gearman function it was submitted to
    pipeline: str | None  # the pipeline it runs (None for plain resize)
    payload: Payload  # decoded once; every hook reads this one
    unique: str  # the job's unique id ("" when the client sent none)
    ask_background: Callable[[], Awaitable[bool | None]]  # one round trip to the job server (gearman.Job)
    received: float = field(default_factory=time.perf_counter)  # when the job came in, before its decode
    result: dict[str, Any] = field(default_factory=dict)  # the last run's result; final in after_job
    attempts: int = 1  # runs of the work so far
    background: bool | None = None  # None until asked (is_background)
    elapsed: float = 0.0  # seconds from ``received`` to the final result (set by the timing hook)

    @property
    def data(self) -> bytes:
        return self.payload.raw

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    async def is_background(self) -> bool | None:
        """Whether nobody waits for the result: asked once, then remembered (None: the server cannot tell)."""
        if self.background is None:
            self.background = await self.ask_background()
        return self.background


class Hook:
    """One step of a job's life. Subclasses set ``name`` and override the phases they need."""

    name = "hook"

    def before_job(self, job: JobState) -> None:
        """On the event loop, once, right after the payload is decoded."""

    def admit(self, job: JobState) -> None:
        """In the job's thread before each run: raise an ImgworkerError to refuse the job."""

    def after_run(self, job: JobState, elapsed: float) -> None:
        """After each run: ``job.result`` is its result, ``elapsed`` its seconds (from a thread taking it)."""

    async def run_again(self, job: JobState) -> bool:
        """After each run: True to run the work again (the hook waits first, if it wants a backoff)."""
        return False

    def after_work(self, job: JobState) -> None:
        """No run follows: the result is final, or the job was cancelled (``job.result`` is then empty)."""

    async def after_job(self, job: JobState) -> None:
        """The result is final; WORK_COMPLETE is sent once every hook has had this call."""

    async def close(self) -> None:
        """At shutdown, after the drain: send or record what is still queued, close connections."""
