"""CallbackSender's ends (issue 26 items 1 and 7), against real HTTP receivers in this process: every callback
ends delivered, given up, or, at close, handed to ``give_up`` with its tries left; whatever it was doing then
(waiting in its backoff, mid-attempt on a receiver that never answers, still queued)."""

from __future__ import annotations

import time

import pytest
from support.receivers import Receiver

from imgworker.core.contract import Payload
from imgworker.features.callbacks import CallbackPolicy, CallbackSender, Delivery

NO_PAYLOAD = Payload(b"{}", {}, None)



def sender_for(rs: list[Receiver], *, tries: int, timeout: float, backoff: float = 0.5, senders: int = 1,
               per_host: int = 2) -> tuple[CallbackSender, list[tuple[str, str, int]]]:
    ended: list[tuple[str, str, int]] = []
    policy = CallbackPolicy([f"127.0.0.1:{r.port}" for r in rs])
    sender = CallbackSender(policy, "k", give_up=lambda d, reason, tries: ended.append((d.unique, reason, tries)),
                            tries=tries, timeout=timeout, backoff=backoff, senders=senders, per_host=per_host)
    return sender, ended


def delivery(policy: CallbackPolicy, r: Receiver, name: str) -> Delivery:
    return Delivery(policy.check(r.url(f"/{name}")), b"{}", "resize", NO_PAYLOAD, name)


def test_close_records_backoff_mid_attempt_and_queued(receivers: list[Receiver]) -> None:
    failing, hanging = Receiver("status", status=500).start(), Receiver("hang").start()
    receivers += [failing, hanging]
    sender, ended = sender_for([failing, hanging], tries=5, timeout=30, backoff=30, senders=1, per_host=1)
    assert sender.submit(delivery(sender.policy, failing, "in-backoff"))
    failing.for_path("/in-backoff")  # answered 500: now in a 30 s backoff
    assert sender.submit(delivery(sender.policy, hanging, "mid-attempt"))
    hanging.for_path("/mid-attempt")  # the one thread is inside this attempt
    assert sender.submit(delivery(sender.policy, failing, "queued"))  # no thread for it
    started = time.monotonic()
    sender.close(timeout=1)
    # A ceiling, not a timing: close(timeout=1) must not wait out the 30 s backoff or the 30 s attempt.
    assert time.monotonic() - started < 10
    got = {unique: (reason, tries) for unique, reason, tries in ended}
    assert set(got) == {"in-backoff", "mid-attempt", "queued"}, ended
    assert got["in-backoff"] == ("worker stopped while the callback waited to be retried", 1)
    assert got["mid-attempt"][0] == "worker stopped before the callback was sent"
    assert got["queued"] == ("worker stopped before the callback was sent", 0)
    assert len(ended) == 3  # each exactly once


def test_a_full_queue_gives_up_at_once_and_says_so(receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch) -> None:
    hanging = Receiver("hang").start()
    receivers.append(hanging)
    monkeypatch.setattr("imgworker.features.callbacks.QUEUE_SIZE", 2)
    sender, ended = sender_for([hanging], tries=1, timeout=30, senders=1)
    assert sender.submit(delivery(sender.policy, hanging, "a")) and sender.submit(delivery(sender.policy, hanging, "b"))
    assert not sender.submit(delivery(sender.policy, hanging, "c"))
    assert ended == [("c", "callback queue full", 0)]
    sender.close(timeout=0.5)
