"""Named YAML pipelines (docs/pipelines.md): load, validate, run."""

from .loader import check_backend, load_file, parse
from .model import Pipeline, PipelineError, Problem
from .registry import PipelineSet, load_dir
from .run import Runner

__all__ = ["Pipeline", "PipelineError", "PipelineSet", "Problem", "Runner", "check_backend", "load_dir",
           "load_file", "parse"]
