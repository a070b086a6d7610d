"""Issue 26 item 11: ``opacity: NaN`` passed the range check (every comparison with NaN is False). Options
validation refuses every non-finite number, for any numeric option, through the same path a job takes."""

from __future__ import annotations

import json
import math

import pytest

from imgworker.core.errors import BadRequest
from imgworker.core.options import OptionError, check_options, integer, number
from imgworker.pipeline.steps.watermark import STEP as WATERMARK


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    for opt in (number(0, 1), integer(1, 10), number(0, 1e9)):
        with pytest.raises(OptionError, match="must be"):
            opt.check(value)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_watermark_opacity_from_json_is_refused(text: str) -> None:
    given = json.loads('{"src": "file:///m.png", "opacity": ' + text + "}")  # what a job's JSON decodes to
    with pytest.raises(BadRequest, match="opacity"):
        check_options(given, WATERMARK.options)
    assert check_options({"src": "file:///m.png", "opacity": 0.3}, WATERMARK.options)["opacity"] == 0.3
