"""One deadline per job: a pipeline's ``timeout`` narrows the job's deadline for its steps and its writes."""

from __future__ import annotations

import json
import time

import pytest

from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import parse_request
from imgworker.core.errors import JobTimeout
from imgworker.core.limits import Limits
from imgworker.pipeline.context import JobContext
from imgworker.pipeline.loader import parse
from imgworker.pipeline.run import Runner
from imgworker.stores import FileStore, Stores


def test_a_pipeline_timeout_narrows_the_jobs_one_deadline(tmp_path):
    limits = Limits(job_timeout_s=100.0)
    pipeline = parse("p.yaml", "name: p\ntimeout: 5\noutputs: [{encode: jpeg}]\n")
    request = parse_request(json.dumps({"src": "file:///a.jpg", "dst": "file:///b.jpg"}).encode(), limits,
                            pipeline="p")
    started = time.monotonic()
    ctx = JobContext(request, Stores({"file": FileStore([str(tmp_path)])}), CpuBackend(), limits, started + 100)
    sctx, _, _ = Runner(pipeline)._resolve(ctx)
    assert ctx.deadline == sctx.deadline <= started + 5.01  # the write check uses the same deadline
    ctx.deadline = sctx.deadline = time.monotonic() - 1
    for check in (ctx.check_deadline, sctx.check_deadline):
        with pytest.raises(JobTimeout, match="time limit of 5 s before write"):
            check("write")
