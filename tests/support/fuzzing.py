"""Hypothesis profiles (loaded by tests/conftest.py before any test module is imported).

- ``ci`` (the default under ``CI=true``): derandomized, so CI fuzzes the same inputs on every run and a red
  build is reproducible; no example database.
- ``dev`` (the default elsewhere): random inputs each run, failures kept in .hypothesis/ and replayed first.
- ``long`` (by hand: ``HYPOTHESIS_PROFILE=long ./dev test -m fuzz``): random, 10x each test's examples.

Tests give their example counts through ``examples(n)`` so the long profile can scale them (an explicit
``max_examples`` in ``@settings`` would override any profile).
"""

from __future__ import annotations

import os

from hypothesis import settings

from support.tools import in_ci

LONG_FACTOR = 10
PROFILE = "dev"


def load() -> str:
    global PROFILE
    settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
    settings.register_profile("dev", deadline=None)
    settings.register_profile("long", deadline=None)
    PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev")
    settings.load_profile(PROFILE)
    return PROFILE


def examples(n: int) -> int:
    """A test's example count under the loaded profile."""
    return n * LONG_FACTOR if PROFILE == "long" else n
