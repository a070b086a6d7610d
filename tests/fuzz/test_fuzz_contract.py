"""Fuzzing the payload parser: whatever bytes a client sends, parse_request returns a valid JobRequest or
raises BadRequest, never another exception (which the worker would report as INTERNAL)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.fuzzing import examples

from imgworker.core.contract import FITS, FORMATS, KNOWN_KEYS, JobRequest, parse_request
from imgworker.core.errors import BadRequest
from imgworker.core.limits import Limits

LIMITS = Limits()
FUZZ = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
# Values a real (or nearly real) job would hold, so the fuzzer gets past the first checks.
plausible = st.one_of(
    st.sampled_from(["file:///data/in.jpg", "file:///data/out.webp", "s3://bucket/k.png", "http://169.254.169.254/",
                     "file://host/x.jpg", "file:///a/../../etc/passwd", "file://[/x", "\ud800", "", "relative.jpg"]),
    st.sampled_from(FITS + FORMATS + ("JPEG", "Cover", "gif", "#fff", "#ffffff", "#zzzzzz")),
    st.integers(min_value=-2, max_value=LIMITS.max_output_side + 2),
    st.sampled_from([0, 1, 100, 101, 100_000, 2**31, 2**64, 1.5, True, [255, 255, 255], [256, 0, 0], [1, 2]]),
)
keys = st.sampled_from((*KNOWN_KEYS, "widht", "Width", "pipline", "", "src ", "__proto__")) | st.text(max_size=8)
payload_objects = st.dictionaries(keys, plausible | json_values, max_size=9)


def check(data: bytes) -> JobRequest | None:
    """The property: a JobRequest within the contract's ranges, or BadRequest with a message."""
    try:
        request = parse_request(data, LIMITS)
    except BadRequest as exc:
        assert exc.code == "BAD_REQUEST" and exc.message and not exc.retryable
        json.dumps(exc.to_dict())  # the message must be JSON-serialisable for the result packet
        return None
    assert isinstance(request.src, str) and request.src and isinstance(request.dst, str) and request.dst
    spec = request.resize
    if spec is not None:
        for side in (spec.width, spec.height):
            assert side is None or (isinstance(side, int) and 1 <= side <= LIMITS.max_output_side)
        assert spec.width is not None or spec.height is not None
        assert spec.format in FORMATS and spec.fit in FITS and 1 <= spec.quality <= 100
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in spec.background)
    return request


@FUZZ
@given(st.binary(max_size=3000))
@example(b"[" * 60_000)  # deeper than the JSON decoder's recursion limit, within the size limit
@example(b'{"src":' * 9000)
@example(b"\xff\xfe{}")
@example(b'{"src":"\\ud800","dst":"file:///x.jpg","width":1}')
@example(b'{"src":"file:///a.jpg","dst":"file:///b.jpg","width":1e400}')
@example(b'{"src":"file:///a.jpg","dst":"file:///b.jpg","width":NaN}')
@example(b" " * (LIMITS.max_payload_bytes + 1))
def test_any_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(payload_objects)
@example({"src": "file:///a.jpg", "dst": "file:///b.jpg", "width": 100_000, "height": 100_000})
@example({"src": "file:///a.jpg", "dst": "file:///b", "width": 10})
@example({"src": "file:///a.jpg", "dst": "file:///b.jpg", "width": 10, "pipeline": "", "x": 1})
def test_json_objects(obj: dict[str, Any]) -> None:
    try:
        data = json.dumps(obj).encode("utf-8", "surrogatepass")
    except (ValueError, OverflowError):
        return
    check(data)


@FUZZ
@given(st.data())
def test_mutated_valid_payloads(data: st.DataObject) -> None:
    text = json.dumps({"src": "file:///data/in.jpg", "dst": "file:///data/out.jpg", "width": 512, "fit": "cover",
                       "height": 300, "quality": 80, "background": "#ffffff", "id": "job-1"})
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.integers(0, 255))
        if op == "insert":
            raw.insert(pos, byte)
        elif pos < len(raw):
            if op == "delete":
                del raw[pos]
            else:
                raw[pos] = byte
    check(bytes(raw))


def test_a_valid_payload_still_parses() -> None:
    """The fuzz property is not vacuous: a real job parses into the spec it describes."""
    request = check(b'{"src":"file:///a.jpg","dst":"file:///b.webp","width":512,"fit":"cover","height":300}')
    assert request is not None and request.resize is not None
    assert (request.resize.width, request.resize.height, request.resize.format) == (512, 300, "webp")


@pytest.mark.parametrize(
    "payload",
    [b"[" * 60_000, b'{"src":"\\ud800","dst":"file:///x.jpg","width":1}', b'{"src":"file://[x","dst":"file:///x.jpg"}'],
)
def test_fixed_hostile_payloads_are_bad_requests(payload: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(payload, LIMITS)
