"""The built-in pipelines every worker serves: ``resize`` (a plain resize job) and ``info`` (facts, no write).

They are runners like the YAML pipelines' (imgworker.pipeline.context.PipelineRunner), so the service has one path:
payload -> runner -> result. ``resize`` is one output through the backend's executor for a whole resize
(``Backend.resize``): on the CPU that is the fast path (header probe -> plan -> shrink-on-load -> geometry ->
encode, libvips stopped at the deadline), on a GPU worker its batched hardware decode, CUDA resize and
nvImageCodec JPEG encode (so ``resize@gpu`` really runs on the GPU), on ``--backend numpy`` the same batcher on
NumPy. The YAML runner (pipeline/run.py) decodes with libvips on the CPU and uploads, which is right for a chain
of steps but would take the hardware decoder away from ``resize@gpu``; hence a runner of its own.
"""

from __future__ import annotations

from typing import Any

from imgworker.analysis.source import facts_of_source
from imgworker.core.functions import INFO, RESIZE
from imgworker.jobs.info import run_info
from imgworker.pipeline.context import JobContext


class ResizePipeline:
    """A plain resize job: one source, one output (docs/contract.md)."""

    name = RESIZE

    def run(self, ctx: JobContext) -> dict[str, Any]:
        request = ctx.request
        assert request.resize is not None
        ctx.refuse_overwriting_source(request.dst)  # before any work; write() does not check it again
        ctx.stores.for_url(request.dst).check(request.dst, write=True)
        source = ctx.read_source()
        ctx.check_deadline("decode")
        # The backend bounds its own work by the job's deadline (CPU: libvips set_kill at it).
        rendered = ctx.backend.resize(source, request.resize, ctx.limits, ctx.deadline)
        ctx.timings["decode"] = rendered.timings.get("decode", 0.0)
        ctx.timings["encode"] = rendered.timings.get("encode", 0.0)
        ctx.write(request.dst, rendered.data, rendered.format)
        result: dict[str, Any] = {
            "dst": request.dst,
            "width": rendered.width,
            "height": rendered.height,
            "format": rendered.format,
            "bytes": len(rendered.data),
            **rendered.fields,
        }
        if request.analyze:
            # The CPU backend computes the facts from its decoded image; a backend that does not (GPU)
            # gets them from one small shrink-on-load decode here.
            if rendered.analysis is not None:
                result["analysis"] = rendered.analysis
                ctx.timings["analysis"] = rendered.timings.get("analysis", 0.0)
            else:
                result["analysis"] = facts_of_source(source, request.analyze, ctx.limits, ctx.backend.fail_on,
                                                     ctx.timings)
        return result


class InfoPipeline:
    """An ``info`` job: the facts of a source, nothing written (imgworker.jobs.info)."""

    name = INFO

    def run(self, ctx: JobContext) -> dict[str, Any]:
        return run_info(ctx)


BUILTIN: dict[str, ResizePipeline | InfoPipeline] = {RESIZE: ResizePipeline(), INFO: InfoPipeline()}
