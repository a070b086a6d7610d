"""Failed-job records as an operator sees them (issue 26 item 4): ``failed list`` escapes what the job put in
a record, and no record is over MAX_RECORD_BYTES, so every one can be listed and retried."""

from __future__ import annotations

import json
from pathlib import Path

from imgworker.commands.failed import summary
from imgworker.core.text import escape_controls
from imgworker.features.failed_jobs import MAX_RECORD_BYTES, FailedJobs, build_record, encode_record
from imgworker.stores import FileStore, Stores

HOSTILE = "file:///in/a.jpg\nFORGED\tLINE\x1b[31mred\x1b]0;title\x07\u202eevil\u2066x\u2028y\x9b\ud800"


def test_summary_is_one_line_without_controls_or_bidi() -> None:
    record = build_record("resize", json.dumps({"src": HOSTILE, "dst": "file:///o.jpg"}).encode(), "u\x1b[2J",
                          {"code": "BAD_REQUEST", "message": "bad\r\nsrc " + HOSTILE}, 1)
    line = summary(record)
    assert "\n" not in line and "\r" not in line and line.count("\t") == 6  # 7 fields, no tab of the job's
    for char in "\x1b\x07\u202e\u2066\u2028\x9b\ud800":
        assert char not in line, repr(char)
    assert "\\n" in line and "\\x1b" in line and "\\u202e" in line and "\\x07" in line
    line.encode("utf-8")  # printable: a lone surrogate would make print() raise


def test_escape_keeps_ordinary_text_and_caps_it() -> None:
    assert escape_controls("photo ünïcode 写真.jpg") == "photo ünïcode 写真.jpg"
    assert escape_controls("x" * 500, 300) == "x" * 300 + "..."


def test_a_record_over_the_cap_keeps_what_retry_needs(tmp_path: Path) -> None:
    payload = json.dumps({"src": "file:///in/a.jpg", "dst": "file:///o.jpg", "width": 8}).encode()
    record = build_record("resize", payload, "u-1", {"code": "STORE_FAILED", "message": "m" * (3 << 20)}, 2)
    data = encode_record(record)
    assert len(data) <= MAX_RECORD_BYTES
    kept = json.loads(data)
    assert kept["truncated"] is True and "payload_truncated" not in kept
    assert kept["payload"] == json.loads(payload) and kept["unique"] == "u-1" and kept["function"] == "resize"
    assert kept["error"]["code"] == "STORE_FAILED"


def test_a_payload_too_big_to_keep_is_marked_and_listed(tmp_path: Path) -> None:
    records = FailedJobs(Stores({"file": FileStore([str(tmp_path)])}), tmp_path.as_uri())
    huge = json.dumps({"src": "file:///in/a.jpg", "a": [{}] * (1 << 20)}).encode()
    url = records.write(build_record("resize", huge, "u-2", {"code": "BAD_REQUEST", "message": "too big"}, 1))
    assert url is not None
    assert Path(url[len("file://"):]).stat().st_size <= MAX_RECORD_BYTES
    ((listed_url, rec),) = list(records.list())  # before: a 1 MiB+ record was invisible to list and retry
    assert listed_url == url and rec["payload_truncated"] is True and rec["unique"] == "u-2"
    assert "not resubmittable" in summary(rec)
