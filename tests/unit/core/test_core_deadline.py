"""One deadline per job: a pipeline's ``timeout`` narrows the job's deadline for its steps and its writes."""

from __future__ import annotations

import json
import time

import pytest

from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import parse_request
from imgworker.core.deadline import Deadline
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
    deadline = Deadline.after(100)
    ctx = JobContext(request, Stores({"file": FileStore([str(tmp_path)])}), CpuBackend(), limits, deadline)
    sctx, _, _ = Runner(pipeline)._resolve(ctx)
    assert ctx.deadline == sctx.deadline == Deadline(deadline.started, 5)  # the write check uses the same one
    ctx.deadline = sctx.deadline = Deadline(time.monotonic() - 6, 5)
    for check in (ctx.check_deadline, sctx.check_deadline):
        with pytest.raises(JobTimeout, match="time limit of 5 s before write"):
            check("write")


def test_a_deadline_narrows_but_never_lengthens_and_names_its_limit():
    deadline = Deadline(100.0, 10)
    assert deadline.at == 110.0 and deadline.narrowed(20) is deadline and deadline.narrowed(5) == Deadline(100.0, 5)
    with pytest.raises(JobTimeout, match="time limit of 1 s before decode"):
        Deadline(time.monotonic() - 2, 1).check("decode")
    Deadline.after(60).check("decode")  # not passed: no error
    assert 59 < Deadline.after(60).left() <= 60
