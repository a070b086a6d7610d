"""Read a pipeline YAML file into a Pipeline, or report every problem with its file:line and a fix.

``yaml.compose`` keeps each node's position, so a message can point at the exact line of the bad value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from imgworker.core.contract import parse_analyze
from imgworker.core.errors import BadRequest
from imgworker.core.functions import BUILTIN
from imgworker.core.quality import parse_auto
from imgworker.pipeline.model import Param, Pipeline, PipelineError, Problem, Ref, StepSpec
from imgworker.pipeline.outputs_spec import OUTPUT_KEYS, _line, read_outputs
from imgworker.pipeline.steps import ENCODE, STEPS, Opt, OptionError, StepDef
from imgworker.pipeline.steps.base import hint

TOP_KEYS = ("name", "description", "timeout", "backends", "animation", "params", "steps", "outputs", "dst_template",
            "analyze")
PARAM_KEYS = ("default", "type", "min", "max", "choices", "override", "description")
PARAM_TYPES = ("int", "float", "bool", "string", "color", "point", "quality")
BACKENDS = ("cpu", "gpu")
# Workers that run steps with their ``array`` executor; numpy is the gpu executor on NumPy, so it serves
# what a gpu worker serves.
ARRAY_BACKENDS = ("gpu", "numpy")


def serves_as(backend: str) -> str:
    """The ``backends:`` value a worker of ``backend`` serves (numpy stands in for gpu)."""
    return "gpu" if backend == "numpy" else backend
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_TIMEOUT = 3600.0


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.loader = yaml.SafeLoader(text)

    def problem(self, node: yaml.Node | int, message: str) -> None:
        self.problems.append(Problem(self.path, node if isinstance(node, int) else _line(node), message))

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def pairs(self, node: yaml.Node, what: str, allowed: tuple[str, ...] | None) -> list[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping (key: value lines)")
            return []
        seen: set[str] = set()
        out = []
        for key_node, value_node in node.value:
            key = str(self.value(key_node))
            if key in seen:
                self.problem(key_node, f"{what}: {key!r} is given twice")
                continue
            seen.add(key)
            if allowed is not None and key not in allowed:
                self.problem(
                    key_node, f"{what}: unknown key {key!r}{hint(key, allowed)}; allowed: {', '.join(allowed)}"
                )
                continue
            out.append((key, value_node))
        return out

    def items(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, f"{what} must be a list (lines starting with '- ')")
            return []
        return list(node.value)

    # --- parameters ---------------------------------------------------------------------------

    def param(self, name: str, node: yaml.Node) -> Param | None:
        spec = dict(self.pairs(node, f"parameter {name!r}", PARAM_KEYS)) if isinstance(node, yaml.MappingNode) else {}
        default = self.value(spec["default"]) if "default" in spec else (None if spec else self.value(node))
        if default is None:
            self.problem(node, f"parameter {name!r} needs a default (e.g. `{name}: {{default: 80}}`)")
            return None
        get = {k: self.value(v) for k, v in spec.items()}
        kind = get.get("type") or _infer(default, get)
        if kind not in PARAM_TYPES:
            self.problem(spec.get("type", node), f"parameter {name!r}: type must be one of {', '.join(PARAM_TYPES)}")
            return None
        opt_kind = {"string": "choice" if "choices" in get else "str"}.get(kind, kind)
        choices = tuple(str(c) for c in get.get("choices", ()))
        lo, hi = get.get("min"), get.get("max")
        if kind == "quality":  # an integer in min..max (default 1..100), or "auto" and its tiers and targets
            lo, hi = 1 if lo is None else lo, 100 if hi is None else hi
        opt = Opt(opt_kind, default, lo, hi, choices)
        try:
            default = opt.check(default)
        except OptionError as exc:
            self.problem(spec.get("default", node), f"parameter {name!r} default {exc}")
            return None
        override = get.get("override", True)
        if not isinstance(override, bool):
            self.problem(spec["override"], f"parameter {name!r}: override must be true or false")
        return Param(name, opt, default, bool(override), str(get.get("description", "")))

    # --- steps --------------------------------------------------------------------------------

    def step(self, node: yaml.Node, params: dict[str, Param], registry: dict[str, StepDef]) -> StepSpec | None:
        if isinstance(node, yaml.ScalarNode):
            name, options_node = str(self.value(node)), None
        elif isinstance(node, yaml.MappingNode) and len(node.value) == 1:
            name, options_node = str(self.value(node.value[0][0])), node.value[0][1]
        else:
            self.problem(node, "a step is a name (`- auto_orient`) or one name with options (`- blur: {sigma: 2}`)")
            return None
        step = registry.get(name)
        if step is None:
            extra = "; encode belongs in an output's `encode:`" if name == "encode" else ""
            self.problem(node, f"unknown step {name!r}{hint(name, registry)}{extra}; steps: {', '.join(registry)}")
            return None
        return self.options(step, options_node, node, params)

    def options(self, step: StepDef, node: yaml.Node | None, at: yaml.Node, params: dict[str, Param],
                lists: tuple[str, ...] = ()) -> StepSpec | None:
        given: list[tuple[str, yaml.Node]] = []
        if node is not None and isinstance(node, yaml.MappingNode):
            given = self.pairs(node, f"{step.name} options", tuple(step.options))
        elif node is not None and not (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
            if step.shorthand is None:
                self.problem(node, f"{step.name} takes options as a mapping: {', '.join(step.options)}")
                return None
            given = [(step.shorthand, node)]
        values: dict[str, Any] = step.defaults()
        before = len(self.problems)
        for key, vnode in given:
            raw = self.value(vnode)
            check = self._checker(step, key, vnode, params)
            values[key] = [check(v) for v in raw] if key in lists and isinstance(raw, list) else check(raw)
        for key, opt in step.options.items():
            if opt.required and key not in values:
                self.problem(at, f"{step.name} needs {key!r} ({opt.describe()})")
        if len(self.problems) > before:
            return None
        return StepSpec(step, values, _line(at))

    def _checker(self, step: StepDef, key: str, vnode: yaml.Node, params: dict[str, Param]) -> Callable[[Any], Any]:
        opt = step.options[key]

        def check(raw: Any) -> Any:
            if isinstance(raw, str) and raw.startswith("$"):
                name = raw[1:]
                param = params.get(name)
                if param is None:
                    self.problem(vnode, f"{step.name} {key}: no parameter {name!r}{hint(name, params)}; "
                                 f"declare it under params:")
                    return None
                for label, v in (("default", param.default), ("min", param.opt.lo), ("max", param.opt.hi)):
                    if v is None:
                        continue
                    try:
                        opt.check(list(v) if isinstance(v, tuple) else v)
                    except OptionError as exc:
                        self.problem(vnode, f"{step.name} {key} uses parameter {name!r} whose {label} does not fit: "
                                     f"{key} {exc}")
                return Ref(name)
            try:
                return opt.check(raw)
            except OptionError as exc:
                self.problem(vnode, f"{step.name} {key} {exc}")
                return None

        return check


def _infer(default: Any, spec: dict[str, Any]) -> str:
    if parse_auto(default) is not None:
        return "quality"  # default: auto (a job may then send a number too)
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "float" if isinstance(spec.get("min"), float) or isinstance(spec.get("max"), float) else "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, list):
        return "point" if all(isinstance(v, float) for v in default) else "color"
    return "color" if isinstance(default, str) and default.startswith("#") else "string"


def parse(path: str, text: str, registry: dict[str, StepDef] | None = None) -> Pipeline:
    """A Pipeline, or PipelineError listing every problem found."""
    registry = STEPS if registry is None else registry
    r = _Reader(path, text)
    try:
        root = r.loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PipelineError([Problem(path, (mark.line + 1) if mark else 1, f"not valid YAML: {exc.problem}")]) from None
    if root is None:
        raise PipelineError([Problem(path, 1, "empty file: a pipeline needs name, steps and outputs")])
    top = dict(r.pairs(root, "pipeline", TOP_KEYS))
    name = r.value(top["name"]) if "name" in top else None
    if not isinstance(name, str) or not NAME_RE.match(name) or name in BUILTIN:
        r.problem(top.get("name", root), "name must be lower-case letters, digits and _ (a Gearman function name, "
                  f"not 'resize' or 'info'), got {name!r}")
    params: dict[str, Param] = {}
    for pname, pnode in r.pairs(top["params"], "params", None) if "params" in top else []:
        param = r.param(pname, pnode)
        if param is not None:
            params[pname] = param
    steps = [r.step(n, params, registry) for n in r.items(top["steps"], "steps")] if "steps" in top else []
    outputs = read_outputs(r, top.get("outputs"), root, params, registry)
    extra: dict[str, Any] = {}
    if "timeout" in top:
        timeout = r.value(top["timeout"])
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
            r.problem(top["timeout"], f"timeout must be seconds, > 0 and <= {MAX_TIMEOUT:g}, got {timeout!r}")
        else:
            extra["timeout"] = float(timeout)
    if "backends" in top:
        backends = r.value(top["backends"])
        if not isinstance(backends, list) or not backends or any(b not in BACKENDS for b in backends):
            r.problem(top["backends"], f"backends must be a list from {', '.join(BACKENDS)}, got {backends!r}")
        else:
            extra["backends"] = tuple(backends)
    if "animation" in top:
        animation = r.value(top["animation"])
        if animation not in ("keep", "first"):
            r.problem(top["animation"], f"animation must be keep (all frames) or first (first frame only), "
                      f"got {animation!r}")
        else:
            extra["animation"] = animation
    if "analyze" in top:
        try:
            extra["analyze"] = parse_analyze(r.value(top["analyze"]), "analyze")
        except BadRequest as exc:
            r.problem(top["analyze"], exc.message)
    for key in ("description", "dst_template"):
        if key in top:
            extra[key] = str(r.value(top[key]))
    if r.problems:
        raise PipelineError(r.problems)
    return Pipeline(str(name), path, params=params, steps=tuple(s for s in steps if s), outputs=tuple(outputs),
                    **extra)


def check_backend(pipeline: Pipeline, backend: str) -> list[Problem]:
    """Steps (or options) a worker of ``backend`` cannot run, for a pipeline that backend would serve."""
    problems = []
    for spec in pipeline.all_steps():
        step = spec.step
        why = None
        if serves_as(backend) not in step.backends:
            why = f"step {step.name!r} runs on {', '.join(step.backends)} only"
        elif backend in ARRAY_BACKENDS and step.array is None:
            why = f"step {step.name!r} has no array executor"
        elif backend in ARRAY_BACKENDS and step.gpu_refuses is not None:
            why = step.gpu_refuses({k: v for k, v in spec.options.items() if not isinstance(v, Ref)} | {
                k: pipeline.params[v.param].default for k, v in spec.options.items() if isinstance(v, Ref)})
        if why:
            problems.append(Problem(pipeline.path, spec.line, f"the {backend} backend cannot run this: {why}; "
                                    f"add `backends: [cpu]` to serve {pipeline.name!r} from cpu workers only, "
                                    "or change the step"))
    return problems


def load_file(path: str, registry: dict[str, StepDef] | None = None) -> Pipeline:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError([Problem(path, 1, f"cannot read: {exc}")]) from None
    return parse(path, text, registry)


__all__ = ["ENCODE", "OUTPUT_KEYS", "check_backend", "load_file", "parse"]
