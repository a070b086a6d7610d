"""MicroBatcher and the OOM shrink path, with fake batch functions (no GPU)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from imgworker.backends.gpu.batcher import MicroBatcher, run_shrinking


class FakeOOM(MemoryError):
    pass


def test_concurrent_submits_form_batches_and_each_gets_its_own_result() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(items: Sequence[int]) -> list[int | BaseException]:
        gate.wait(1.0)  # hold the first batch so the rest queue up
        seen.append(list(items))
        return [i * 10 for i in items]

    with MicroBatcher(run, max_batch=4, max_wait_ms=50) as mb:
        results: dict[int, int] = {}

        def call(i: int) -> None:
            results[i] = mb.submit(i, timeout=5)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        gate.set()
        for t in threads:
            t.join(5)
    assert results == {i: i * 10 for i in range(10)}
    assert sorted(x for batch in seen for x in batch) == list(range(10))
    assert max(len(b) for b in seen) == 4  # batches were formed, capped at max_batch
    assert len(seen) < 10


def test_single_item_is_not_held_longer_than_max_wait() -> None:
    def run(items: Sequence[str]) -> list[str | BaseException]:
        return [s.upper() for s in items]

    # A lone item waits for company at most max_wait (300 ms), then runs alone. Bounds are generous: a loaded
    # 2-core CI machine may add scheduling delay, never a second wait.
    with MicroBatcher(run, max_batch=8, max_wait_ms=300) as mb:
        mb.submit("warm", timeout=5)
        t0 = time.perf_counter()
        assert mb.submit("x", timeout=5) == "X"
        waited = time.perf_counter() - t0
    assert waited < 0.300 + 1.5
    assert mb.batch_sizes[-1] == 1


def _echo(items: Sequence[int]) -> list[int | BaseException]:
    return list(items)


def test_max_wait_zero_runs_immediately() -> None:
    # Measured against a batcher that holds a lone item for 1.5 s: zero-wait must not hold it at all.
    held = MicroBatcher(_echo, max_batch=8, max_wait_ms=1500)
    with MicroBatcher(_echo, max_batch=8, max_wait_ms=0) as mb, held:
        t0 = time.perf_counter()
        assert mb.submit(5, timeout=5) == 5
        zero = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert held.submit(5, timeout=5) == 5
        waited = time.perf_counter() - t0
    assert waited >= 1.4 and zero < waited / 3


def test_errors_go_to_the_right_caller() -> None:
    def run(items: Sequence[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    with MicroBatcher(run, max_batch=8, max_wait_ms=30) as mb:
        futs = {i: mb.submit_async(i) for i in range(6)}
        for i, fut in futs.items():
            if i % 2:
                with pytest.raises(ValueError, match=f"bad {i}"):
                    fut.result(5)
            else:
                assert fut.result(5) == i


def test_whole_batch_failure_reaches_every_caller_and_batcher_survives() -> None:
    calls = {"n": 0}

    def run(items: Sequence[int]) -> list[int | BaseException]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device lost")
        return list(items)

    with MicroBatcher(run, max_batch=8, max_wait_ms=30) as mb:
        futs = [mb.submit_async(i) for i in range(3)]
        for fut in futs:
            with pytest.raises(RuntimeError, match="device lost"):
                fut.result(5)
        assert mb.submit(7, timeout=5) == 7  # the next batch still runs


def test_wrong_result_count_is_an_error_not_a_hang() -> None:
    def one(items: Sequence[int]) -> list[int | BaseException]:
        return [1]

    with MicroBatcher(one, max_batch=8, max_wait_ms=30) as mb:
        futs = [mb.submit_async(i) for i in range(3)]
        for fut in futs:
            with pytest.raises(RuntimeError, match="3 items"):
                fut.result(5)


def test_closed_batcher_refuses_and_bad_arguments() -> None:
    mb = MicroBatcher(_echo)
    mb.close()
    with pytest.raises(RuntimeError, match="closed"):
        mb.submit(1)
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: list(items), max_batch=0)


def test_oom_halves_the_batch_until_it_fits() -> None:
    sizes: list[int] = []
    freed = {"n": 0}

    def run(items: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        if len(items) > 2:
            raise FakeOOM("out of memory")
        return [i + 100 for i in items]

    out = run_shrinking(run, list(range(8)), lambda e: isinstance(e, FakeOOM), lambda: freed.__setitem__("n", 1))
    assert out == [i + 100 for i in range(8)]
    assert sizes == [8, 4, 2, 2, 4, 2, 2]  # halved, each half retried on its own
    assert freed["n"] == 1


def test_oom_single_item_falls_back_or_returns_error() -> None:
    def run(items: Sequence[int]) -> list[int | BaseException]:
        if 3 in items:
            raise FakeOOM("too big")
        return list(items)

    def is_oom(e: BaseException) -> bool:
        return isinstance(e, FakeOOM)

    out = run_shrinking(run, [1, 2, 3, 4], is_oom, fallback=lambda item, exc: -item)
    assert out == [1, 2, -3, 4]
    out2 = run_shrinking(run, [3], is_oom)
    assert isinstance(out2[0], FakeOOM)
    with pytest.raises(KeyError):  # other errors are not swallowed
        run_shrinking(lambda items: (_ for _ in ()).throw(KeyError("x")), [1], is_oom)
