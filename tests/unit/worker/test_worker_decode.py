"""Issue 26 item 2: a payload is decoded off the event loop when it is big enough to take time (a hostile 64 KiB
of ``[[],[],...]`` takes tens of milliseconds to decode and check); small ones, the usual case, stay inline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from imgworker.core import contract
from imgworker.core.limits import Limits
from imgworker.worker import runner


def test_big_payloads_are_decoded_in_a_thread_small_ones_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = contract.read_payload

    def spy(data: bytes, limits: Limits) -> contract.Payload:
        threads.append(threading.current_thread().name)
        return real(data, limits)

    monkeypatch.setattr(runner, "read_payload", spy)
    head = b'{"src":"file:///x.jpg","dst":"file:///y.jpg","width":8,"a":['
    big = head + b"[]," * 20000 + b"[]]}"
    small = b'{"src":"file:///x.jpg","dst":"file:///y.jpg","width":8}'

    async def both() -> tuple[contract.Payload, contract.Payload, str]:
        return (await runner.decode(big, Limits()), await runner.decode(small, Limits()),
                threading.current_thread().name)

    big_payload, small_payload, loop_thread = asyncio.run(both())
    assert big_payload.error is None and len(big_payload.fields["a"]) == 20001
    assert small_payload.fields["width"] == 8
    assert threads[0] != loop_thread and threads[1] == loop_thread, threads
