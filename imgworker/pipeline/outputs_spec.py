"""The ``outputs:`` section: each entry is an optional resize (``width`` may list sizes), optional steps and
one or more encodes; a list of widths times a list of encodes gives one output each."""

from __future__ import annotations

from typing import Any

import yaml

from imgworker.core.errors import BadRequest
from imgworker.pipeline.model import OutputSpec, Param, Ref, StepSpec
from imgworker.pipeline.steps import ENCODE, STEPS, StepDef
from imgworker.pipeline.steps.encode import validate as validate_encode

MAX_OUTPUTS = 32
OUTPUT_KEYS = ("resize", "steps", "encode", "label")


def _line(node: yaml.Node) -> int:
    """The 1-based line of a YAML node (for file:line messages)."""
    return int(node.start_mark.line) + 1


def read_outputs(r: Any, node: yaml.Node | None, root: yaml.Node, params: dict[str, Param],
                 registry: dict[str, StepDef]) -> list[OutputSpec]:
    if node is None:
        r.problem(root, "a pipeline needs outputs: (e.g. `outputs: [{encode: {format: jpeg}}]`)")
        return []
    if isinstance(node, yaml.SequenceNode) and not node.value:
        # Every job on it would fail: nothing to encode, nothing to write.
        r.problem(node, "outputs: is empty; a pipeline needs at least one (e.g. `- encode: {format: jpeg}`)")
        return []
    outputs: list[OutputSpec] = []
    for item in r.items(node, "outputs"):
        spec = dict(r.pairs(item, "output", OUTPUT_KEYS))
        if "encode" not in spec:
            r.problem(item, "an output needs encode: (e.g. `encode: {format: webp, quality: 80}`)")
            continue
        resizes: list[StepSpec | None] = [None]
        if "resize" in spec:
            resize = r.options(STEPS["resize"], spec["resize"], spec["resize"], params, lists=("width", "height"))
            resizes = _expand(resize) if resize else []
        steps = [r.step(n, params, registry) for n in r.items(spec["steps"], "output steps")] if "steps" in spec else []
        enode = spec["encode"]
        enodes = enode.value if isinstance(enode, yaml.SequenceNode) else [enode]
        encodes = [r.options(ENCODE, n, n, params) for n in enodes]
        for enc, at in zip(encodes, enodes, strict=True):
            why = enc and encode_problem(enc, params)
            if why:
                r.problem(at, why)
        label = str(r.value(spec["label"])) if "label" in spec else None
        if any(s is None for s in steps) or any(e is None for e in encodes) or not resizes:
            continue
        for rs in resizes:
            outputs.append(OutputSpec(rs, tuple(s for s in steps if s), tuple(e for e in encodes if e), label,
                                      _line(item)))
    total = sum(len(o.encodes) for o in outputs)
    if total > MAX_OUTPUTS:
        r.problem(node, f"{total} outputs; at most {MAX_OUTPUTS} per pipeline (each costs an encode and a write)")
    return outputs


def encode_problem(enc: StepSpec, params: dict[str, Param]) -> str | None:
    """What the encode's options cannot be together (``quality: auto`` with PNG...), parameters at their
    defaults (a job's values are checked again when it runs: encode.validate)."""
    values = {k: params[v.param].default if isinstance(v, Ref) and v.param in params else v
              for k, v in enc.options.items()}
    try:
        validate_encode(values)
    except BadRequest as exc:
        return f"encode: {exc.message}"
    return None


def _expand(resize: StepSpec) -> list[StepSpec | None]:
    """``width: [256, 512]`` -> one resize per width (and likewise height; both lists pair up)."""
    widths = resize.options["width"]
    heights = resize.options["height"]
    if not isinstance(widths, list) and not isinstance(heights, list):
        return [resize]
    n = max(len(v) for v in (widths, heights) if isinstance(v, list))
    out: list[StepSpec | None] = []
    for i in range(n):
        w = widths[i % len(widths)] if isinstance(widths, list) else widths
        h = heights[i % len(heights)] if isinstance(heights, list) else heights
        out.append(StepSpec(resize.step, {**resize.options, "width": w, "height": h}, resize.line))
    return out
