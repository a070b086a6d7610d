"""Named YAML pipelines (docs/pipelines.md): load, validate, run."""

from imgworker.pipeline.loader import check_backend, load_file, parse
from imgworker.pipeline.model import Pipeline, PipelineError, Problem
from imgworker.pipeline.registry import PipelineSet, load_dir
from imgworker.pipeline.run import Runner

__all__ = ["Pipeline", "PipelineError", "PipelineSet", "Problem", "Runner", "check_backend", "load_dir",
           "load_file", "parse"]
