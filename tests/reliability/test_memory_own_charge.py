"""A job never waits for memory it holds itself (issue 26, item 8), against a real worker and gearmand.

An interlaced PNG (decoded whole) resized to the same size (~43 MiB of output and encoder) under a
``--memory-budget`` between the larger charge and their sum: either charge fits, both together do not. Before:
the output charge waited for the job's own decode charge until the job timeout and the job ended TIMEOUT
(retryable, so a background job ran 3 more times). Now: LIMIT_EXCEEDED at once, saying how much the job needs
in all; a smaller output of the same source (decode + output under the budget) runs at once.
docs/security.md, "Memory budget".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyvips
from support.fixtures_hostile import code, job
from support.fixtures_reliability import NamedWorker

from imgworker.core import budget
from imgworker.testing.gearmand import Gearmand

JOB_TIMEOUT_S = 5


def test_decode_plus_output_over_the_budget_is_limit_exceeded_at_once(
    gearmand: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    src = root / "interlaced.png"
    pyvips.Image.black(3000, 3000, bands=3).copy(interpretation="srgb").pngsave(str(src), interlace=True,
                                                                               compression=1)
    # A budget between the larger of the two charges and their sum (from the estimates themselves).
    decode = budget.estimate(width=3000, height=3000, bands=3, bytes_per_sample=1, loader="png", whole=True,
                             out_width=0, out_height=0, fmt="jpeg", source_bytes=src.stat().st_size).total
    output = budget.estimate(width=0, height=0, bands=3, bytes_per_sample=1, loader="png", whole=False,
                             out_width=3000, out_height=3000, fmt="jpeg").total
    limit_mib = (max(decode, output) + (decode + output - max(decode, output)) // 2) // budget.MIB
    assert max(decode, output) < limit_mib * budget.MIB < decode + output
    worker_factory([gearmand.address], [root], concurrency=2,
                   extra=["--memory-budget", str(limit_mib), "--job-timeout", str(JOB_TIMEOUT_S)]).wait_ready()
    t0 = time.monotonic()
    result = job(gearmand.address, {"src": src.as_uri(), "dst": (root / "out" / "same.jpg").as_uri(),
                                    "width": 3000, "height": 3000, "fit": "fill"}, timeout=60)
    took = time.monotonic() - t0
    assert code(result) == "LIMIT_EXCEEDED", result
    assert "in all" in result["error"]["message"], result
    assert took < JOB_TIMEOUT_S / 2, f"answered after {took:.1f} s: the job waited for its own memory"
    small = job(gearmand.address, {"src": src.as_uri(), "dst": (root / "out" / "small.jpg").as_uri(),
                                   "width": 300}, timeout=60)
    assert code(small) == "ok", small
