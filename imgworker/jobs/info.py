"""The ``info`` function: the facts of a source without writing anything (analysis/source.py computes them)."""

from __future__ import annotations

import time
from typing import Any

from imgworker.analysis.source import facts_of_source
from imgworker.pipeline.context import JobContext

DEFAULT_FACTS = ("meta",)


def run_info(ctx: JobContext) -> dict[str, Any]:
    request = ctx.request
    source = ctx.read_source()
    ctx.check_deadline("decode")
    t0 = time.perf_counter()
    analysis = facts_of_source(source, request.analyze or DEFAULT_FACTS, ctx.limits, ctx.backend.fail_on)
    ctx.timings["analysis"] = (time.perf_counter() - t0) * 1000
    return {"src": request.src, "analysis": analysis}
