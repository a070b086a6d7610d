"""Failed-job records (docs/reliability.md): the record's exact shape, and writing, listing and removing records
through a real FileStore in the test's temp folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imgworker.core.errors import ForbiddenPath
from imgworker.features.failed_jobs import MAX_RECORD_BYTES, FailedJobs, build_record, redact_payload, redact_value
from imgworker.stores import FileStore, Stores

NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{16}\.json")


def test_a_record_has_exactly_the_documented_fields() -> None:
    payload = json.dumps({"src": "file:///in/a.jpg", "width": 3}).encode()
    record = build_record("resize", payload, "u-7", {"code": "DECODE_FAILED", "message": "bad", "retryable": True},
                          2, background=True, worker="w-1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.pop("time"))
    assert record == {"version": 1, "kind": "job", "function": "resize", "unique": "u-7",
                      "payload": {"src": "file:///in/a.jpg", "width": 3},
                      "error": {"code": "DECODE_FAILED", "message": "bad", "retryable": True},
                      "attempts": 2, "background": True, "worker": "w-1"}


def test_the_record_time_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import calendar
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # 9 hours from UTC: a local time would be far off
    time.tzset()
    try:
        stamp = build_record("resize", b"{}", "u", {}, 1)["time"]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert abs(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.time()) < 3600


def test_a_callback_record_and_the_defaults() -> None:
    record = build_record("avatar", b"not json", "u-8", {}, 1, callback={"url": "https://h/cb", "tries": 5})
    record.pop("time")
    assert record == {"version": 1, "kind": "callback", "function": "avatar", "unique": "u-8", "payload": "not json",
                      "error": {"code": "INTERNAL", "message": "", "retryable": False},
                      "attempts": 1, "background": None, "worker": "", "callback": {"url": "https://h/cb", "tries": 5}}


def _wrap(value: object, levels: int) -> object:
    for _ in range(levels):
        value = [value]
    return value


def _nest(value: object, levels: int) -> object:
    for _ in range(levels):
        value = {"k": value}
    return value


def test_redaction_depth_and_non_json_payloads() -> None:
    url = "s3://k:pw@b/x"
    assert redact_value(_wrap(url, 32)) == _wrap("s3://***@b/x", 32)  # 32 levels deep is still walked
    assert redact_value(_wrap(url, 33)) == _wrap("***", 33)  # deeper: cut, never shown
    assert redact_value(_nest(url, 32)) == _nest("s3://***@b/x", 32)  # objects count as levels too
    assert redact_value(_nest(url, 33)) == _nest("***", 33)
    assert redact_value(7) == 7 and redact_value(None) is None and redact_value(1.5) == 1.5
    assert redact_payload(b"\xff\xfe token=abc") == "\ufffd\ufffd token=abc"  # not UTF-8: replaced
    assert redact_payload(b"x" * 70000) == "x" * 65536  # not JSON: its first 64 KiB
    assert redact_payload(b'{"a": [1, 2]}') == {"a": [1, 2]} and redact_payload(b"[1]") == [1]


@pytest.fixture
def records(tmp_path: Path) -> tuple[FailedJobs, Path]:
    folder = tmp_path / "failed"
    return FailedJobs(Stores({"file": FileStore([tmp_path])}), folder.as_uri() + "/"), folder


def test_write_list_and_remove(records: tuple[FailedJobs, Path]) -> None:
    jobs, folder = records
    assert jobs.prefix == folder.as_uri()  # the trailing slash is dropped, and nothing else
    assert FailedJobs(Stores({"file": FileStore([folder])}), "file:///srv/failedX/").prefix == "file:///srv/failedX"
    jobs.check()
    first = build_record("resize", b'{"width": 1}', "u-1", {"code": "SOURCE_NOT_FOUND"}, 1)
    url = jobs.write(first)
    assert url is not None and url.startswith(folder.as_uri() + "/") and NAME.fullmatch(url.rsplit("/", 1)[1])
    text = (folder / url.rsplit("/", 1)[1]).read_text()
    assert text == json.dumps(first, separators=(",", ":"), sort_keys=True)  # compact, keys sorted
    (folder / "00-notes.txt").write_text("not a record")
    (folder / "01-broken.json").write_text("{not json")
    (folder / "02-list.json").write_text("[1, 2]")
    (folder / "03-nofunction.json").write_text('{"function": 7}')
    (folder / "04-big.json").write_text(json.dumps({"function": "x", "pad": "y" * MAX_RECORD_BYTES}))
    assert list(jobs.list()) == [(url, first)]
    jobs.remove(url)
    assert not (folder / url.rsplit("/", 1)[1]).exists() and list(jobs.list()) == []
    jobs.remove(url)  # already gone: fine


def test_record_names_start_with_the_utc_time(records: tuple[FailedJobs, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import calendar
    import time

    jobs, _ = records
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        url = jobs.write(build_record("resize", b"{}", "u", {"code": "X"}, 1))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert url is not None
    stamp = url.rsplit("/", 1)[1].split("-")[0]
    assert abs(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")) - time.time()) < 3600


def test_records_list_oldest_first(records: tuple[FailedJobs, Path]) -> None:
    jobs, folder = records
    folder.mkdir()
    for name, fn in (("20260102T000000Z-b.json", "second"), ("20260101T000000Z-a.json", "first")):
        (folder / name).write_text(json.dumps({"function": fn}))
    assert [r["function"] for _, r in jobs.list()] == ["first", "second"]


def test_a_refused_write_returns_none_and_a_prefix_outside_the_roots_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the folder should be")
    jobs = FailedJobs(Stores({"file": FileStore([tmp_path])}), (tmp_path / "file" / "failed").as_uri())
    assert jobs.write(build_record("resize", b"{}", "u", {"code": "X"}, 1)) is None
    outside = FailedJobs(Stores({"file": FileStore([tmp_path / "root"])}), (tmp_path / "elsewhere").as_uri())
    with pytest.raises(ForbiddenPath):
        outside.check()
    with pytest.raises(ForbiddenPath):
        outside.remove((tmp_path / "elsewhere" / "x.json").as_uri())


def _count(result: str) -> float:
    from imgworker.features import metrics

    return float(metrics.FAILED_RECORDS.labels(result)._value.get())


def test_writes_are_logged_and_counted(records: tuple[FailedJobs, Path], tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    jobs, folder = records
    caplog.set_level("INFO", logger="imgworker.features.failed_jobs")
    written, logged = _count("written"), _count("logged")
    url = jobs.write(build_record("resize", b"{}", "u", {"code": "DECODE_FAILED"}, 1))
    assert (_count("written"), _count("logged")) == (written + 1, logged)
    assert caplog.messages[-1] == f"failed-job record {url}: resize DECODE_FAILED"
    (tmp_path / "file").write_text("in the way")
    blocked = FailedJobs(Stores({"file": FileStore([tmp_path])}), (tmp_path / "file" / "f").as_uri())
    assert blocked.write(build_record("resize", b"{}", "u", {"code": "X"}, 1)) is None
    assert (_count("written"), _count("logged")) == (written + 1, logged + 1)
    # Refused by its store, the record is not lost: it is on the log line, whole, which says so (issue 26).
    assert caplog.messages[-1].startswith(f"failed-job record not written to {(tmp_path / 'file' / 'f').as_uri()} "
                                          "(cannot write destination")
    logged_record = json.loads(caplog.messages[-1].split("logged here instead: failed-job record ", 1)[1])
    assert logged_record == {**build_record("resize", b"{}", "u", {"code": "X"}, 1), "time": logged_record["time"]}
    (folder / "bad.json").write_text("{")
    assert list(jobs.list()) == [(url, json.loads((folder / url.rsplit("/", 1)[1]).read_text()))]
    assert caplog.messages[-1] == f"skipping {(folder / 'bad.json').as_uri()}: not a readable record (JSONDecodeError)"


class _S3Like:
    """What FailedJobs needs of an S3 store (the real one runs against moto in test_failed_jobs_s3.py)."""

    scheme = "s3"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.checked: list[tuple[str, bool]] = []
        self.deleted: list[dict[str, str]] = []
        self.written: list[tuple[str, str]] = []
        self.client = self

    def check(self, url: str, *, write: bool = False) -> None:
        self.checked.append((url, write))

    def write(self, url: str, data: bytes, options: object) -> None:
        self.written.append((url, getattr(options, "content_type", "")))

    def delete_object(self, **kw: str) -> None:
        if self.fail:
            raise RuntimeError("AccessDenied")
        self.deleted.append(kw)

    def _translate(self, exc: BaseException, op: str, url: str) -> Exception:
        return ValueError(f"{op} {url}: {exc}")


def test_records_on_s3_are_written_as_json_and_deleted_through_the_unwrapped_store() -> None:
    from imgworker.features.metrics import MeteredStore

    s3 = _S3Like()
    jobs = FailedJobs(Stores({"s3": MeteredStore(s3)}), "s3://bkt/failed/")  # type: ignore[arg-type]
    url = jobs.write(build_record("resize", b"{}", "u", {"code": "X"}, 1))
    assert url is not None and s3.written == [(url, "application/json")]
    jobs.remove("s3://bkt/failed/a.json")
    assert s3.checked[-1] == ("s3://bkt/failed/a.json", True)
    assert s3.deleted == [{"Bucket": "bkt", "Key": "failed/a.json"}]
    failing = FailedJobs(Stores({"s3": _S3Like(fail=True)}), "s3://bkt/failed")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^delete s3://bkt/failed/b\.json: AccessDenied$"):
        failing.remove("s3://bkt/failed/b.json")
