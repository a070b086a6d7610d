"""Fixtures for the Gearman protocol tests: a real gearmand on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from imgworker.gearman import Worker
from imgworker.gearman.worker import Handler
from imgworker.testing.gearmand import Gearmand
from support.tools import require_tool

T = TypeVar("T")

__all__ = ["GEARMAN_TOOLS", "gearman_fn", "gearmand", "gearmand_factory"]

if os.environ.get("IMGWORKER_TEST_LOOP") == "uvloop":  # run the suite on uvloop: asyncio.run and new_event_loop
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

GEARMAN_TOOLS = shutil.which("gearman") is not None and os.path.exists("/usr/sbin/gearmand")
_counter = itertools.count()


@pytest.fixture(scope="session")
def gearmand() -> Iterator[Gearmand]:
    """One gearmand shared by the session; use ``gearman_fn`` names so tests do not see each other's jobs."""
    require_tool("gearmand", "apt-get install gearman-job-server", path="/usr/sbin/gearmand")
    with Gearmand() as g:
        yield g


@pytest.fixture
def gearmand_factory() -> Iterator[Callable[[], Gearmand]]:
    """Start private gearmands (for tests that kill/restart them); all are stopped at test end."""
    require_tool("gearmand", "apt-get install gearman-job-server", path="/usr/sbin/gearmand")
    started: list[Gearmand] = []

    def make() -> Gearmand:
        g = Gearmand().start()
        started.append(g)
        return g

    yield make
    for g in started:
        g.close()


@pytest.fixture
def gearman_fn(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Function-name maker unique to this test (and process): ``gearman_fn("up")`` -> 'up_test_x_3_1234'."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]

    def make(prefix: str = "fn") -> str:
        return f"{prefix}_{base}_{next(_counter)}_{os.getpid()}"

    return make


@contextlib.asynccontextmanager
async def running_worker(
    servers: list[str], handlers: dict[str, Handler], *, max_jobs: int = 1, wait: bool = True, **kw: Any
) -> AsyncIterator[Worker]:
    """Run a Worker in the current loop for the duration of the block (test helper, not a fixture)."""
    w = Worker(servers, max_jobs=max_jobs, **kw)
    for name, h in handlers.items():
        w.register(name, h)
    task = asyncio.create_task(w.run())
    try:
        if wait:
            await w.wait_connected()
        yield w
    finally:
        await w.close()
        await asyncio.wait_for(task, 10)


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """asyncio.run with a hard deadline so a bug fails the test instead of hanging it."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
