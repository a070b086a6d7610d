"""The pipelines a worker serves: every ``*.yaml`` in a directory, validated together, swapped whole on reload.

A gpu worker skips (and logs) pipelines that say ``backends: [cpu]``; a pipeline it would serve but cannot run
is refused at load, with the file and line of the step.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping

from imgworker.pipeline.loader import check_backend, load_file, serves_as
from imgworker.pipeline.model import Pipeline, PipelineError, Problem
from imgworker.pipeline.run import Runner

log = logging.getLogger("imgworker.pipeline")


def load_dir(directory: str, backend: str) -> tuple[dict[str, Pipeline], list[str]]:
    """(pipelines this backend serves, names skipped for another backend); PipelineError with every problem."""
    paths = sorted(glob.glob(os.path.join(directory, "*.yaml")) + glob.glob(os.path.join(directory, "*.yml")))
    problems: list[Problem] = []
    found: dict[str, Pipeline] = {}
    skipped: list[str] = []
    for path in paths:
        try:
            pipeline = load_file(path)
        except PipelineError as exc:
            problems += exc.problems
            continue
        if pipeline.name in found:
            other = found[pipeline.name].path
            problems.append(Problem(path, 1, f"pipeline name {pipeline.name!r} is already used by {other}"))
            continue
        if serves_as(backend) not in pipeline.backends:
            skipped.append(pipeline.name)
            continue
        problems += check_backend(pipeline, backend)
        found[pipeline.name] = pipeline
    if problems:
        raise PipelineError(problems)
    return found, skipped


class PipelineSet:
    """The current pipelines; ``reload()`` swaps them all or, on any error, keeps the old set."""

    def __init__(self, directory: str, backend: str, pipelines: dict[str, Pipeline]) -> None:
        self.directory = directory
        self.backend = backend
        self._runners: dict[str, Runner] = {name: Runner(p) for name, p in pipelines.items()}

    @classmethod
    def load(cls, directory: str, backend: str) -> PipelineSet:
        """Load or raise PipelineError (the worker refuses to start)."""
        pipelines, skipped = load_dir(directory, backend)
        for name in skipped:
            log.info("pipeline %s is not for the %s backend (backends:); not served here", name, backend)
        return cls(directory, backend, pipelines)

    def current(self) -> Mapping[str, Runner]:
        # Jobs take the mapping once; a reload rebinds _runners, so jobs in flight keep the set they started with.
        return self._runners

    def reload(self) -> bool:
        """Re-read the directory. On error: log every problem, keep the old set, return False."""
        try:
            pipelines, _ = load_dir(self.directory, self.backend)
        except PipelineError as exc:
            log.error("pipeline reload failed; still serving the previous set:\n%s", exc)
            return False
        self._runners = {name: Runner(p) for name, p in pipelines.items()}
        log.info("pipelines reloaded: %s", ", ".join(sorted(self._runners)) or "none")
        return True
