"""Every pipeline step, by name. An explicit list: a reader sees every step here (docs/pipelines.md has examples)."""

from __future__ import annotations

from imgworker.pipeline.steps import (
    auto_orient,
    blur,
    colour,
    crop,
    encode,
    extend,
    extract,
    flatten,
    flip,
    grayscale,
    metadata,
    modulate,
    resize,
    rotate,
    sharpen,
    trim,
    watermark,
)
from imgworker.pipeline.steps.base import Opt, OptionError, StepDef

__all__ = ["ENCODE", "STEPS", "Opt", "OptionError", "StepDef"]

# encode is an output's own key, not a step in the list.
ENCODE = encode.STEP
STEPS: dict[str, StepDef] = {
    s.name: s
    for s in (
        auto_orient.STEP, resize.STEP, crop.STEP, extract.STEP, extend.STEP, trim.STEP, rotate.STEP, flip.STEP,
        blur.STEP, sharpen.STEP, modulate.STEP, grayscale.STEP, flatten.STEP, colour.STEP, metadata.STEP,
        watermark.STEP,
    )
}
