"""Failed-job records carry no credentials (docs/reliability.md, "No credentials"): every key form and query
parameter the doc lists is redacted wherever it sits in the payload, and nothing else is touched.

The lists below are the doc's, written out here; they are not read from imgworker.features.failed_jobs.
"""

from __future__ import annotations

import json

import pytest

from imgworker.features.failed_jobs import build_record, redact_payload, redact_value

SECRET = "hunter2-S3CRET-value"

# Secret-looking keys, in the spellings a web backend or an SDK uses (docs/reliability.md lists the stems).
SECRET_KEYS = [
    "password", "Password", "PASSWORD", "db_password", "passwd", "secret", "client_secret", "aws_secret_access_key",
    "token", "access_token", "refreshToken", "api_key", "api-key", "apikey", "apiKey", "X-Api-Key", "access_key",
    "accessKey", "aws_access_key_id", "credential", "credentials", "X-Amz-Credential", "signature",
    "X-Amz-Signature", "auth", "Authorization", "proxy_auth", "cookie", "Set-Cookie",
]
# Query parameters named like secrets, in any string of the payload.
SECRET_PARAMS = [
    "token", "access_token", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "api_key", "apikey",
    "api-key", "access_key", "password", "passwd", "secret", "client_secret", "signature", "auth",
]
# Ordinary job keys: a record that hid these would be useless for a retry.
PLAIN = {"src": "s3://photos/in/a.jpg", "dst": "file:///srv/out/a.webp", "width": 512, "height": None,
         "format": "webp", "quality": 80, "id": "upload-7", "fit": "cover", "position": "faces",
         "callback": "https://hooks.example.com/done?upload=7", "steps": ["resize", {"width": 3}]}


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_every_secret_looking_key_is_redacted_at_any_depth(key: str) -> None:
    payload = {**PLAIN, key: SECRET, "steps": [{"watermark": {key: SECRET, "opacity": 0.5}}],
               "headers": {key: {"nested": SECRET}}}
    got = redact_payload(json.dumps(payload).encode())
    assert got == {**PLAIN, key: "***", "steps": [{"watermark": {key: "***", "opacity": 0.5}}],
                   "headers": {key: "***"}}
    assert SECRET not in json.dumps(got)


@pytest.mark.parametrize("param", SECRET_PARAMS)
def test_every_secret_looking_query_parameter_is_redacted(param: str) -> None:
    url = f"https://h.example/p.jpg?size=3&{param}={SECRET}&w=4#frag"
    assert redact_value(url) == f"https://h.example/p.jpg?size=3&{param}=***&w=4#frag"
    first = f"https://h.example/p.jpg?{param}={SECRET}"
    assert redact_value({"src": first}) == {"src": f"https://h.example/p.jpg?{param}=***"}


def test_userinfo_is_redacted_in_urls_and_in_text() -> None:
    assert redact_value({"src": f"s3://AKIA:{SECRET}@bucket/k.jpg"}) == {"src": "s3://***@bucket/k.jpg"}
    assert redact_payload(f"not json https://u:{SECRET}@h/p".encode()) == "not json https://***@h/p"


def test_plain_keys_and_values_are_left_alone() -> None:
    """The negative control: redaction that hid everything would pass the tests above."""
    assert redact_payload(json.dumps(PLAIN).encode()) == PLAIN
    assert redact_value("https://h.example/p.jpg?size=3&w=4&fit=cover") == "https://h.example/p.jpg?size=3&w=4&fit=cover"


def test_a_record_carries_no_secret_in_payload_message_or_callback() -> None:
    payload = json.dumps({**PLAIN, "password": SECRET, "src": f"https://u:{SECRET}@h/a.jpg?token={SECRET}"})
    record = build_record("resize", payload.encode(), "u-1",
                          {"code": "SOURCE_NOT_FOUND", "message": f"GET https://h/a.jpg?X-Amz-Signature={SECRET}"},
                          3, background=True,
                          callback={"url": f"https://hooks.example.com/cb?token={SECRET}", "tries": 5})
    assert SECRET not in json.dumps(record)
    assert record["payload"]["password"] == "***" and record["payload"]["width"] == 512
    assert record["payload"]["src"] == "https://***@h/a.jpg?token=***"
    assert record["error"] == {"code": "SOURCE_NOT_FOUND", "message": "GET https://h/a.jpg?X-Amz-Signature=***",
                               "retryable": False}
    assert record["callback"] == {"url": "https://hooks.example.com/cb?token=***", "tries": 5}


@pytest.mark.parametrize(("url", "shown"), [
    ("s3://KEY:SECRET@b/k", "s3://***@b/k"),
    ("s3://SECRET@b/k", "s3://***@b/k"),
    ("s3://KEY:ab/cd@b/k", "s3://***@b/k"),  # a secret with a slash: everything up to the last "@" goes
    ("https://u:p@w@h/p", "https://***@h/p"),  # a password with an "@"
    ("https://a@b@c/d", "https://***@c/d"),
    ("x://u@h", "x://***@h"),
    ("s3://b/k@2x.jpg", "s3://b/k@2x.jpg"),  # an "@" in the key, not in the authority: kept
    ("s3://b/x:y/k@z.jpg", "s3://b/x:y/k@z.jpg"),  # a ":" and an "@" in the key: kept
    ("s3://KEY:ab/c d@b/k", "s3://***@b/k"),  # a secret with a slash and a space
    ("s3://b/k", "s3://b/k"),
    ("not a url@x", "not a url@x"),
    ("mailto:a@b", "mailto:a@b"),
    ("text https://u:pw@h/p more", "text https://***@h/p more"),  # no "@" after "://" in the authority part
])
def test_redact_url(url: str, shown: str) -> None:
    from imgworker.core.errors import redact_url

    assert redact_url(url) == shown
