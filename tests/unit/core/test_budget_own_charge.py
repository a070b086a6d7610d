"""Budget.admit never makes a job wait for memory it holds itself (issue 26, item 8).

A job is charged in steps: its decode at the header (backends/cpu.py: probe), its output once the size is planned.
Before: the output charge waited while *any* job held memory, the job's own decode charge included, so a job whose
decode + output exceeded the budget (either alone fitting) waited out its whole time limit and ended TIMEOUT, which
is retryable (a background job then ran 3 more times). Now its charges are held to the budget together (at once
LIMIT_EXCEEDED when they cannot fit), it waits only for other jobs, and two jobs that each hold a decode and wait
for their output do not wait for each other until both time out.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from imgworker.core import budget
from imgworker.core.budget import MIB, Cost
from imgworker.core.deadline import Deadline, set_running
from imgworker.core.errors import LimitExceeded

LIMIT = 100 * MIB
TIME_LIMIT_S = 3.0


@pytest.fixture
def process_budget() -> Iterator[budget.Budget]:
    before = budget.current()
    b = budget.configure(LIMIT, "test")
    yield b
    budget._BUDGET = before


def _job(steps: list[Cost], started: threading.Event | None = None, hold: float = 0.0) -> tuple[str, float]:
    """One job's charges in its own context with a time limit; what it ended with, and when."""
    def run() -> tuple[str, float]:
        t0 = time.monotonic()
        set_running(Deadline(t0, TIME_LIMIT_S))
        try:
            with budget.job_scope():
                for i, cost in enumerate(steps):
                    budget.charge(cost)
                    if i == 0 and started is not None:
                        started.set()
                time.sleep(hold)
            return "ok", time.monotonic() - t0
        except Exception as exc:
            return type(exc).__name__, time.monotonic() - t0

    return contextvars.copy_context().run(run)


def test_decode_plus_output_over_the_budget_is_refused_at_once_not_timed_out(process_budget: budget.Budget) -> None:
    # 60 MiB decode and 50 MiB output: each fits in 100 MiB, together they do not.
    outcome, took = _job([Cost(60 * MIB, 0), Cost(0, 50 * MIB)])
    assert outcome == LimitExceeded.__name__, outcome
    assert took < 1.0, f"the job waited {took:.1f} s for memory it held itself"
    assert process_budget.in_use == 0 and process_budget.jobs == 0


def test_a_job_that_fits_alone_never_waits_on_itself(process_budget: budget.Budget) -> None:
    outcome, took = _job([Cost(60 * MIB, 0), Cost(0, 40 * MIB)])
    assert (outcome, took < 1.0) == ("ok", True), (outcome, took)


def test_steps_of_one_job_wait_for_other_jobs_only(process_budget: budget.Budget) -> None:
    # Another job holds 30 MiB for 1 s: 60 + 40 + 30 > 100, so the second step waits for it, then runs.
    started = threading.Event()
    other = threading.Thread(target=lambda: _job([Cost(30 * MIB, 0)], started, hold=1.0))
    other.start()
    started.wait(5)
    outcome, took = _job([Cost(60 * MIB, 0), Cost(0, 40 * MIB)])
    other.join()
    assert outcome == "ok" and 0.5 < took < TIME_LIMIT_S, (outcome, took)


def test_two_jobs_holding_their_decode_do_not_wait_for_each_other_until_both_time_out(
    process_budget: budget.Budget,
) -> None:
    # Each holds 40 MiB and then wants 40 more: 80 + 40 > 100 for whichever asks. One goes ahead (over the
    # budget, logged), the other waits for it and then runs.
    gate = threading.Barrier(2)
    results: list[tuple[str, float]] = []


    def run() -> None:
        def steps() -> tuple[str, float]:
            t0 = time.monotonic()
            set_running(Deadline(t0, TIME_LIMIT_S))
            try:
                with budget.job_scope():
                    budget.charge(Cost(40 * MIB, 0))
                    gate.wait(5)  # both hold their decode before either asks for its output
                    budget.charge(Cost(0, 40 * MIB))
                    time.sleep(0.3)
                return "ok", time.monotonic() - t0
            except Exception as exc:
                return type(exc).__name__, time.monotonic() - t0

        results.append(contextvars.copy_context().run(steps))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIME_LIMIT_S + 5)
    assert [r[0] for r in results] == ["ok", "ok"], results
    assert max(r[1] for r in results) < TIME_LIMIT_S, results
    assert process_budget.in_use == 0 and process_budget.jobs == 0 and process_budget.stuck == 0
