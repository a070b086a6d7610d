"""The CPU backend: libvips through pyvips (the toolbox it uses is imgworker/imaging/).

A plain resize is header probe -> plan -> shrink-on-load (a JPEG decodes at 1/2, 1/4 or 1/8 scale when the
output is small enough), EXIF auto-orientation and colour management to sRGB (CMYK with its embedded profile,
16-bit inputs) -> crop or pad -> encode, stopped at the job's deadline. Decode strictness is ``fail_on``
(imaging/load.py).
"""

from __future__ import annotations

import time
from typing import Any

import pyvips

from imgworker import analysis
from imgworker.backends.base import Rendered
from imgworker.core import budget
from imgworker.core.contract import ResizeSpec
from imgworker.core.deadline import Deadline
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits
from imgworker.imaging.encode import encode
from imgworker.imaging.errors import translate
from imgworker.imaging.geometry import apply_geometry
from imgworker.imaging.kill import evaluate
from imgworker.imaging.load import FAIL_ON, load_resized
from imgworker.imaging.probe import output_cost, probe


class CpuBackend:
    name = "cpu"
    executor = "vips"  # pipelines run every step's libvips implementation (imgworker/pipeline/run.py)

    def __init__(self, fail_on: str = "warning") -> None:
        if fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)}")
        self.fail_on = fail_on

    def resize(self, source: bytes, spec: ResizeSpec, limits: Limits, deadline: Deadline | None = None) -> Rendered:
        t0 = time.perf_counter()
        deadline = deadline or Deadline.after(limits.job_timeout_s)
        info = probe(source, limits)
        geo = plan(info.width, info.height, spec.width, spec.height, spec.fit, limits)
        budget.charge(output_cost(info, geo.final_w, geo.final_h, spec.format))
        loaded: list[Any] = []
        image = load_resized(source, info, geo, self.fail_on, loaded)
        # Computed into memory so decode errors surface here and stage timings are honest; the job's deadline
        # stops libvips mid-decode.
        timings: dict[str, float] = {}
        facts = None
        if spec.analyze:  # from the resized pixels, before crop or pad: decoded once, into memory
            image = evaluate(image, deadline, watched=loaded)
            try:
                facts = analysis.of_decoded(image, source, spec.analyze, shown=info.shown_size, timings=timings)
            except pyvips.Error as exc:
                raise translate(exc, "source") from None
        image = apply_geometry(image, geo, spec.background)
        image = evaluate(image, deadline, watched=loaded)
        t1 = time.perf_counter()
        data, fields = encode(image, spec.format, spec.quality, spec.background, deadline)
        t2 = time.perf_counter()
        return Rendered(
            data=data,
            width=image.width,
            height=image.height,
            format=spec.format,
            timings={"decode": (t1 - t0) * 1000, "encode": (t2 - t1) * 1000, **timings},
            analysis=facts,
            fields=fields,
        )
