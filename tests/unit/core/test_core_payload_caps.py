"""Issue 26 item 2, in one module each: error messages are capped (they quote what a job sent), so no result,
record or log line grows with a payload; the cut keeps no credential that redaction would have hidden."""

from __future__ import annotations

import json

import pytest

from imgworker.core.contract import parse_request, read_payload
from imgworker.core.errors import MAX_MESSAGE, BadRequest
from imgworker.core.limits import Limits


def test_a_refusal_quoting_a_big_value_is_capped() -> None:
    data = json.dumps({"src": "file:///a.jpg", "dst": "file:///b.jpg", "width": 8, "id": [0] * 20000}).encode()
    assert len(data) < Limits().max_payload_bytes
    with pytest.raises(BadRequest) as err:
        parse_request(read_payload(data, Limits()), Limits())
    assert "'id' must be a string or integer" in err.value.message
    assert len(err.value.message) <= MAX_MESSAGE + 40 and "characters in all" in err.value.message


def test_the_cut_is_made_after_redaction() -> None:
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY"
    text = "x" * (MAX_MESSAGE - 30) + f" s3://AKIAEXAMPLE:{secret}@bucket/key" + "y" * 500
    message = BadRequest(text).to_dict()["message"]
    assert secret[:8] not in message, message[-200:]
