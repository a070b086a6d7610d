"""S3 timeouts and retries that fit inside what is left of the job.

A store that accepts connections and never answers must fail the job in time, not hold its thread for the
default budget (5 attempts x 20 s connect + 20 s read, plus backoff: minutes, past a 60 s job limit). Each
request picks a client whose worst case fits the time left: ``attempts`` x (connect + read timeout) plus
botocore's backoff between attempts (up to 2^i s, standard mode) within a fraction of it. Clients are cached
per step of a fixed ladder of budgets, so a worker holds a handful of clients, not one per job.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imgworker.core.deadline import time_left
from imgworker.core.errors import JobTimeout

# Budgets (s) a request may be given; the time left is rounded down to one of these.
LADDER = (1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300, 600)
MIN_LEFT_S = 0.5  # less than this left: the job times out rather than start a request
_TIMEOUTS_SHARE = 0.6  # of the budget: attempts x (connect + read); the rest is for backoff


@dataclass(frozen=True, slots=True)
class Plan:
    budget: float
    attempts: int
    timeout: float  # connect and read timeout, each


def plan(left: float, max_attempts: int, max_timeout: float) -> Plan:
    budget = next((b for b in reversed(LADDER) if b <= left), LADDER[0])
    # Backoff before attempt i+1 is up to 2^i s: sum over n attempts is 2^n - 2; keep it in the backoff share.
    fit = int(math.log2((1 - _TIMEOUTS_SHARE) * budget + 2))
    attempts = max(1, min(max_attempts, fit))
    timeout = min(max_timeout, _TIMEOUTS_SHARE * budget / (2 * attempts))
    return Plan(budget, attempts, round(timeout, 2))


class DeadlineClients:
    """The S3 client to use now: the configured one outside a job, else one sized to the job's time left."""

    def __init__(self, default: Any, make: Callable[[int, float], Any] | None, max_attempts: int,
                 max_timeout: float) -> None:
        self.default = default
        self._make = make
        self._max_attempts = max_attempts
        self._max_timeout = max_timeout
        self._clients: dict[Plan, Any] = {}
        self._lock = threading.Lock()

    def current(self) -> Any:
        left = time_left()
        if left is None or self._make is None:
            return self.default
        if left < MIN_LEFT_S:
            raise JobTimeout("job passed its time limit before its store request")
        p = plan(left, self._max_attempts, self._max_timeout)
        if p.attempts >= self._max_attempts and p.timeout >= self._max_timeout:
            return self.default  # the configured budget already fits
        with self._lock:
            client = self._clients.get(p)
            if client is None:
                client = self._clients[p] = self._make(p.attempts, p.timeout)
            return client
