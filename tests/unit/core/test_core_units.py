"""Unit tests of single modules: contract parsing, geometry, config. End-to-end tests are elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.workerproc import REPO

from imgworker.core.config import ConfigError, WorkerConfig, from_env, load
from imgworker.core.contract import parse_request, parse_resize
from imgworker.core.errors import BadRequest, LimitExceeded, SourceNotFound, error_from_dict
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits

L = Limits()


def req(**kw: object) -> bytes:
    return json.dumps({"src": "file:///a/b.jpg", "dst": "file:///a/c.jpg", **kw}).encode()


def test_parse_defaults_and_format_from_extension() -> None:
    r = parse_request(req(width=10), L)
    assert r.resize is not None
    assert (r.resize.width, r.resize.height, r.resize.fit, r.resize.format, r.resize.quality) == (
        10,
        None,
        "inside",
        "jpeg",
        85,
    )
    r = parse_request(json.dumps({"src": "file:///a", "dst": "file:///b.WEBP", "height": 5}).encode(), L)
    assert r.resize is not None and r.resize.format == "webp" and r.resize.quality == 80


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{nope", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (req(width=True), "'width' must be an integer"),
        (req(width=10, quality="high"), "'quality' must be an integer"),
        (req(width=10, background="red"), "'background' must be a colour"),
        (req(width=10, formt="png"), "did you mean 'format'"),
        (req(width=10, id=[1]), "'id' must be a string or integer"),
        (b"{" + b'"a":1,' * 20000 + b'"b":1}', "the limit is 65536"),
    ],
)
def test_bad_payloads_name_the_problem(payload: bytes, text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(payload, L)
    assert text in info.value.message


def test_resize_and_pipeline_options_share_one_validation_with_hints() -> None:
    # One path (imgworker/core/options.py): a resize job's fit typo gets the hint a pipeline's resize step gets.
    from imgworker.pipeline import parse
    from imgworker.pipeline.model import PipelineError

    with pytest.raises(BadRequest) as job:
        parse_request(req(width=10, fit="cove"), L)
    with pytest.raises(PipelineError) as pipe:
        parse("p.yaml", "name: t\noutputs: [{resize: {width: 10, fit: cove}, encode: jpeg}]\n")
    wanted = "must be one of inside, cover, contain, fill, outside, got 'cove' (did you mean 'cover'?)"
    assert job.value.message == "'fit' " + wanted
    assert wanted in str(pipe.value)
    with pytest.raises(BadRequest, match=r"'format' must be one of jpeg, png, webp, avif, got 'wepb' \(did you mean"):
        parse_request(req(width=10, format="wepb"), L)
    assert parse_request(req(width=10, fit=None), L).resize.fit == "inside"  # type: ignore[union-attr]


def test_pipeline_keys_are_left_to_the_pipeline() -> None:
    r = parse_request(req(pipeline="avatar", size=64), L)
    assert r.pipeline == "avatar" and r.overrides == {"size": 64} and r.resize is None


def test_background_colours() -> None:
    spec = parse_resize({"width": 1, "background": "#0f0"}, "x.png", L)
    assert spec.background == (0, 255, 0)
    assert parse_resize({"width": 1, "background": [1, 2, 3]}, "x.png", L).background == (1, 2, 3)


@pytest.mark.parametrize(
    ("fit", "w", "h", "expect"),
    [
        ("inside", 100, 100, (100, 50, 100, 50)),
        ("contain", 100, 100, (100, 50, 100, 100)),
        ("cover", 100, 100, (200, 100, 100, 100)),
        ("outside", 100, 100, (200, 100, 200, 100)),
        ("fill", 100, 100, (100, 100, 100, 100)),
        ("inside", 100, None, (100, 50, 100, 50)),
        ("cover", None, 7, (14, 7, 14, 7)),
    ],
)
def test_geometry(fit: str, w: int | None, h: int | None, expect: tuple[int, int, int, int]) -> None:
    g = plan(4000, 2000, w, h, fit, L)
    assert (g.resize_w, g.resize_h, g.final_w, g.final_h) == expect
    if fit == "cover" and w and h:
        assert g.crops and (g.crop_left, g.crop_top) == ((g.resize_w - g.final_w) // 2, 0)
    if fit == "contain":
        assert g.pads and g.pad_top == 25


def test_geometry_never_zero_and_refuses_giants() -> None:
    assert plan(10000, 1, 100, None, "inside", L).resize_h == 1
    with pytest.raises(LimitExceeded):
        plan(1, 1, 16000, 16000, "fill", L)


def test_error_round_trip() -> None:
    err = error_from_dict(SourceNotFound("gone").to_dict())
    assert isinstance(err, SourceNotFound) and err.message == "gone" and not err.retryable


def test_config_env_and_flags() -> None:
    values = from_env({"IMGWORKER_SERVERS": "a:1, b:2", "IMGWORKER_CONCURRENCY": "3", "PATH": "/bin"})
    assert values == {"servers": ["a:1", "b:2"], "concurrency": 3}
    with pytest.raises(ConfigError, match="did you mean IMGWORKER_CONCURRENCY"):
        from_env({"IMGWORKER_CONCURENCY": "3"})
    with pytest.raises(ConfigError, match="must be a number"):
        from_env({"IMGWORKER_PROCESSES": "many"})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        WorkerConfig(servers=["nohost"]).validate()
    with pytest.raises(ConfigError, match="not an existing directory"):
        load(environ={"IMGWORKER_ROOTS": "/definitely/not/here"})
    assert WorkerConfig().validate().limits.max_source_pixels == L.max_source_pixels


def test_cli_config_error_exits_2_with_a_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgworker", "worker", "--server", "127.0.0.1:4730", "--root", "/no/such/dir"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "configuration error: --root '/no/such/dir' is not an existing directory" in proc.stderr


def test_a_job_payload_is_decoded_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The worker decodes a payload once (contract.read_payload); the service, the log line, the failed
    # result's id and the notifier all read that one object.
    from support.corpus import photo

    from imgworker.backends.cpu import CpuBackend
    from imgworker.core.contract import read_payload
    from imgworker.features.callbacks import CallbackPolicy, result_body
    from imgworker.features.failed_jobs import build_record
    from imgworker.features.notify import target
    from imgworker.jobs.service import Service
    from imgworker.stores import Stores
    from imgworker.stores.file import FileStore
    from imgworker.worker.lifecycle.job_log import log_job

    service = Service(Stores({"file": FileStore([str(tmp_path), str(photo("dragonfly").parent)])}), CpuBackend(), L)
    data = json.dumps({"src": photo("dragonfly").as_uri(), "dst": (tmp_path / "o.jpg").as_uri(), "width": 32,
                       "id": 7, "notify": "done"}).encode()
    calls: list[bytes] = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda s, *a, **k: calls.append(s) or loads(s, *a, **k))
    payload = read_payload(data, L)
    result = service.handle(payload)
    log_job("resize", result, 0.01, payload)
    where = target(payload)
    # The callback allow-list check, a failed-job record and a callback body read it too (issue 26 item 2).
    CallbackPolicy([]).precheck(payload)
    record = build_record("resize", payload, "u", {"code": "TIMEOUT"}, 1)
    body = result_body(payload.fields, "resize", result)
    assert record["payload"]["id"] == 7 and body["id"] == 7
    assert result["ok"] and result["id"] == 7 and where is not None and where["notify"] == "done"
    assert len(calls) == 1
    refused = read_payload(req(width=0, id="x"), L)
    assert refused.error is None and refused.id == "x"  # its keys are the service's to refuse
    with pytest.raises(BadRequest, match="'width' must be"):
        service.handle(refused)
    # Over the limit: refused on its length alone, never parsed (issue 26 item 2: a parse cost ~7x its size).
    calls.clear()
    big = read_payload(b'{"id": 5, "pad": "' + b"x" * 70000 + b'"}', L)
    assert big.error is not None and "the limit is 65536" in big.error.message and big.id is None
    assert calls == []
