"""A loaded pipeline: parameters (defaults, which a job may override), shared steps, outputs.

Step options are checked when the file loads; an option that names a parameter (``$width``) is checked again
with the job's value, so a job gets BAD_REQUEST naming its key, never a libvips error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from imgworker.core.contract import suggest
from imgworker.core.errors import BadRequest
from imgworker.pipeline.steps import Opt, OptionError, StepDef

# Job keys every pipeline accepts besides its parameters.
FOCAL = Opt("point", None)


class Ref(NamedTuple):
    """An option value that is a parameter: ``$name`` in the file."""

    param: str


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class PipelineError(Exception):
    """One or more problems in pipeline files; each names the file, the line and the fix."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Param:
    name: str
    opt: Opt
    default: Any
    override: bool = True
    description: str = ""


@dataclass(frozen=True)
class StepSpec:
    step: StepDef
    # Checked values, or Ref for a parameter; every option is present (defaults filled in).
    options: Mapping[str, Any]
    line: int

    def resolve(self, values: Mapping[str, Any], pipeline: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.options.items():
            if isinstance(value, Ref):
                try:
                    value = self.step.options[key].check(values[value.param])
                except OptionError as exc:
                    raise BadRequest(
                        f"{value.param!r} {exc} (pipeline {pipeline!r} uses it as {self.step.name} {key})"
                    ) from None
            out[key] = value
        return out


@dataclass(frozen=True)
class OutputSpec:
    resize: StepSpec | None
    steps: tuple[StepSpec, ...]
    encodes: tuple[StepSpec, ...]
    label: str | None
    line: int


@dataclass(frozen=True)
class Pipeline:
    name: str
    path: str
    description: str = ""
    params: Mapping[str, Param] = field(default_factory=dict)
    steps: tuple[StepSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    timeout: float | None = None
    backends: tuple[str, ...] = ("cpu", "gpu")
    animation: str = "keep"
    dst_template: str = "{stem}-{width}.{ext}"
    analyze: tuple[str, ...] = ()  # facts every job's result gets (imgworker.analysis), besides the job's own

    @property
    def job_keys(self) -> list[str]:
        return [*sorted(n for n, p in self.params.items() if p.override), "focal"]

    def all_steps(self) -> list[StepSpec]:
        found = list(self.steps)
        for out in self.outputs:
            found += ([out.resize] if out.resize else []) + list(out.steps) + list(out.encodes)
        return found

    def resolve_params(self, overrides: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[float, float] | None]:
        """Parameter values for one job, and its focal point; BadRequest names the key and what is allowed."""
        values = {name: p.default for name, p in self.params.items()}
        focal = None
        allowed = ", ".join(self.job_keys)
        for key, value in overrides.items():
            if key == "focal":
                try:
                    focal = FOCAL.check(value)
                except OptionError as exc:
                    raise BadRequest(f"'focal' {exc}") from None
                continue
            param = self.params.get(key)
            if param is None:
                raise BadRequest(
                    f"pipeline {self.name!r} has no parameter {key!r}{suggest(key, self.job_keys)}; "
                    f"a job may set: {allowed}"
                )
            if not param.override:
                raise BadRequest(
                    f"pipeline {self.name!r} fixes {key!r}: a job may not set it; a job may set: {allowed}"
                )
            try:
                values[key] = param.opt.check(value)
            except OptionError as exc:
                raise BadRequest(f"{key!r} {exc}") from None
        return values, focal
