"""Hostile but small job payloads against one real worker and gearmand (issue 19, items 1, 3, 9-12).

Each test is a defect a probe found: before the fix the worker leaked, allocated gigabytes, forged log lines,
answered WORK_FAIL or INTERNAL, or echoed credentials; the figures quoted are in docs/security.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.fixtures_hostile import REPO, NamedWorker, code, job, open_fds, vm_hwm_kb
from support.fixtures_reliability import make_tiny_image
from support.tools import require_privilege

from imgworker.testing.gearmand import Gearmand

SECRET = "imgwkrS3cret"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("hostile-root")
    make_tiny_image(root / "in" / "ok.png")
    (root / "in" / "adir").mkdir()
    (root / "out").mkdir()
    log = tmp_path_factory.mktemp("hostile-log") / "worker.log"
    with Gearmand() as server:
        # S3 enabled (an endpoint nobody answers on: these jobs are refused before any request).
        worker = NamedWorker([server.address], [root], log, name="hostile-inputs", concurrency=2,
                            extra=["--pipelines", str(REPO / "pipelines"), "--s3-endpoint", "http://127.0.0.1:9",
                                   "--s3-bucket", "bucket", "--s3-max-attempts", "1"],
                            env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
        worker.start().wait_ready()
        yield {"server": server.address, "root": root, "worker": worker}
        worker.stop()


def resize(env: dict[str, Any], **payload: Any) -> dict[str, Any]:
    root: Path = env["root"]
    body = {"src": (root / "in" / "ok.png").as_uri(), "dst": (root / "out" / "a.png").as_uri(), "width": 8,
            **payload}
    return job(env["server"], body)


# --- 1: a directory as src -----------------------------------------------------------------------------------


def test_a_directory_as_src_is_a_clear_error_and_leaks_no_descriptor(env: dict[str, Any]) -> None:
    """Before: INTERNAL (IsADirectoryError) and one fd leaked per job (60 jobs: +60 fds)."""
    worker: NamedWorker = env["worker"]
    assert code(resize(env)) == "ok"  # warm: the first job opens libraries' files
    before = open_fds(worker.pid)
    src = (env["root"] / "in" / "adir").as_uri()
    results = [resize(env, src=src) for _ in range(60)]
    assert {code(r) for r in results} == {"SOURCE_NOT_FOUND"}
    assert "directory" in results[0]["error"]["message"]
    assert open_fds(worker.pid) <= before + 2
    assert code(resize(env)) == "ok"


# --- 3: dst templates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["{stem:>50000000}", "{stem!r}", "{width:{height}}", "{stem:%Y}"])
def test_a_dst_template_with_a_format_spec_is_refused_before_any_allocation(env: dict[str, Any],
                                                                             field: str) -> None:
    """Before: ``{stem:>500000000}`` x4 took the worker to 6 GB; here 50 MB x4 (+400 MB before the fix)."""
    worker: NamedWorker = env["worker"]
    root: Path = env["root"]
    peak = vm_hwm_kb(worker.pid)
    dst = f"file://{root}/out/" + field * 4
    result = job(env["server"], {"src": (root / "in" / "ok.png").as_uri(), "dst": dst}, function="thumbnail")
    assert code(result) == "BAD_REQUEST"
    assert "plain" in result["error"]["message"] or "dst uses" in result["error"]["message"]
    assert vm_hwm_kb(worker.pid) - peak < 50_000  # KiB


def test_a_plain_dst_template_still_works(env: dict[str, Any]) -> None:
    root: Path = env["root"]
    dst = f"file://{root}/out/t-{{stem}}-{{width}}.{{ext}}"
    result = job(env["server"], {"src": (root / "in" / "ok.png").as_uri(), "dst": dst}, function="thumbnail")
    assert code(result) == "ok", result
    assert (root / "out" / "t-ok-64.jpg").is_file() or Path(result["dst"].removeprefix("file://")).is_file()


# --- 9: control characters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x1b", "\x00", "\u2028", "\x85"])
def test_control_characters_in_urls_are_refused_and_never_logged_raw(env: dict[str, Any], char: str) -> None:
    """Before: ``\\n`` in src forged a log line; ``\\t`` in dst was dropped by urlsplit (another file written)."""
    worker: NamedWorker = env["worker"]
    root: Path = env["root"]
    forged = "job function=resize outcome=ok FORGED"
    r1 = resize(env, src=(root / "in" / "ok.png").as_uri() + char + forged)
    r2 = resize(env, dst=f"file://{root}/out/ct{char}x.png")
    assert code(r1) == code(r2) == "BAD_REQUEST"
    assert "control character" in r1["error"]["message"]
    assert not any(p.name.startswith("ct") for p in (root / "out").iterdir())
    assert not any(line.startswith(forged) or line.startswith(forged.split(" ")[0] + " function=resize outcome=ok F")
                   for line in worker.log().splitlines())
    assert forged not in "\n".join(ln for ln in worker.log().splitlines() if not ln.startswith("20")
                                   and "job function=" not in ln[:40])


# --- 10: deep nesting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"[" * 60_000,
    b'{"src":' + b"[" * 30_000,
    b'{"src":"file:///x.png","dst":"file:///y.png","width":' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"src":"file:///x.png","dst":"file:///y.png","id":' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}",
])
def test_deeply_nested_json_is_a_bad_request_result_not_work_fail(env: dict[str, Any], payload: bytes) -> None:
    """Before: WORK_FAIL (RecursionError while logging), which the contract tells clients to resubmit."""
    result = job(env["server"], payload)
    assert code(result) == "BAD_REQUEST", result
    assert not result["error"]["retryable"]


# --- 11: credentials in URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    f"s3://AKIAKEY:{SECRET}@bucket/k.jpg",
    f"s3://AKIAKEY:{SECRET}@x@bucket/k.jpg",
    f"s3://AKIAKEY:{SECRET} x@bucket/k.jpg",
    f"s3://AKIAKEY:{SECRET}'x@bucket/k.jpg",
    f's3://AKIAKEY:{SECRET}"x@bucket/k.jpg',
    f"s3://AKIAKEY:{SECRET}/x+y@bucket/k.jpg",
    f"s3://{SECRET}@bucket/k.jpg",
])
def test_credentials_in_a_url_never_reach_a_result_or_the_log(env: dict[str, Any], url: str) -> None:
    """Before: ``invalid bucket name 'KEY:SECRET'`` in the result; a password with @, space or quote in the log."""
    worker: NamedWorker = env["worker"]
    for payload in ({"src": url}, {"dst": url}, {"src": url, "notify": "nobody_listens"}):
        result = resize(env, **payload)
        assert code(result) == "BAD_REQUEST", result
        assert SECRET not in json.dumps(result) and "AKIAKEY" not in json.dumps(result)
    pipeline = job(env["server"], {"src": (env["root"] / "in" / "ok.png").as_uri(), "watermark": url,
                                   "dst": (env["root"] / "out" / "wm.jpg").as_uri()}, function="product_zoom")
    assert code(pipeline) in ("BAD_REQUEST", "FORBIDDEN_PATH") and SECRET not in json.dumps(pipeline)
    assert SECRET not in worker.log()


# --- 12: the smaller ones ------------------------------------------------------------------------------------


def test_an_integer_of_5000_digits_is_a_bad_request(env: dict[str, Any]) -> None:
    """Before: INTERNAL (int/str conversion limit)."""
    root: Path = env["root"]
    payload = (b'{"src":"' + (root / "in" / "ok.png").as_uri().encode() + b'","dst":"'
               + (root / "out" / "a.png").as_uri().encode() + b'","width":' + b"9" * 5000 + b"}")
    assert code(job(env["server"], payload)) == "BAD_REQUEST"


def test_a_dst_ending_in_a_slash_writes_nothing(env: dict[str, Any]) -> None:
    """Before: a file named like the directory ("out/newdir") was written."""
    root: Path = env["root"]
    result = resize(env, dst=f"file://{root}/out/newdir/", format="png")
    assert code(result) == "BAD_REQUEST" and "file name" in result["error"]["message"]
    assert not (root / "out" / "newdir").exists()


def test_a_percent_escape_that_is_not_utf8_is_refused_not_changed(env: dict[str, Any]) -> None:
    """Before: ``%ff`` became U+FFFD and the job wrote "\\ufffd.png"."""
    root: Path = env["root"]
    result = resize(env, dst=f"file://{root}/out/bad%ff.png")
    assert code(result) == "BAD_REQUEST"
    assert not [p for p in (root / "out").iterdir() if p.name.startswith("bad")]


@pytest.mark.parametrize("colour", ["#-1-1-1", "#+ff+ff", "# 1 2 3", "#0x1"])
def test_malformed_colours_are_refused(env: dict[str, Any], colour: str) -> None:
    """Before: ``#-1-1-1`` was accepted (int("-1", 16))."""
    assert code(resize(env, background=colour, format="jpeg", width=8, height=8, fit="contain")) == "BAD_REQUEST"


def test_svg_is_refused(env: dict[str, Any]) -> None:
    """Before: decoded (librsvg), with filters whose cost no header bounds: 294 bytes ran 65 s+ at 2.2 GB."""
    root: Path = env["root"]
    svg = root / "in" / "x.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000"><filter id="f">'
                   '<feGaussianBlur stdDeviation="300"/><feMorphology radius="300"/></filter>'
                   '<rect width="100%" height="100%" filter="url(#f)"/></svg>')
    result = resize(env, src=svg.as_uri(), width=4000, format="png")
    assert code(result) == "UNSUPPORTED_IMAGE" and "SVG" in result["error"]["message"]


def test_forbidden_path_messages_do_not_list_the_roots_or_buckets(env: dict[str, Any]) -> None:
    root: Path = env["root"]
    r1 = resize(env, src="file:///etc/passwd")
    r2 = resize(env, src="s3://otherbucket/k.jpg")
    assert code(r1) == code(r2) == "FORBIDDEN_PATH"
    assert str(root) not in r1["error"]["message"] and "bucket," not in r2["error"]["message"]
    assert "'bucket'" not in r2["error"]["message"] and "(bucket" not in r2["error"]["message"]


def test_the_metrics_server_listens_on_loopback_by_default(tmp_path: Path) -> None:
    """Before: 0.0.0.0 (every interface) unless told otherwise."""
    from imgworker.core.config import WorkerConfig

    assert WorkerConfig().metrics_host == "127.0.0.1"


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_is_a_retryable_store_failure(env: dict[str, Any], tmp_path: Path) -> None:
    """Before: STORE_FAILED with retryable false (another worker, or the same later, may well succeed)."""
    root: Path = env["root"]
    full = root / "out" / "full"
    if not _tmpfs(full, "8k"):
        require_privilege("mounting a tmpfs needs root (CAP_SYS_ADMIN)", "run the tests as root")
    try:
        big = root / "in" / "noise.png"
        pyvips.Image.gaussnoise(256, 256).cast("uchar").pngsave(str(big))
        result = resize(env, src=big.as_uri(), dst=(full / "x.png").as_uri(), width=256)
        assert code(result) == "STORE_FAILED", result
        assert result["error"]["retryable"] is True
        assert not [p for p in full.iterdir()]  # no .part left behind
    finally:
        subprocess.run(["umount", str(full)], check=False)
    assert code(resize(env)) == "ok"
    assert os.path.exists(root / "out" / "a.png")


# --- 7: secondary images go through the same limits ----------------------------------------------------------


def test_a_watermark_over_the_pixel_limit_is_refused_before_decoding(
        tmp_path: Path, worker_factory: Any) -> None:
    """Before: the watermark skipped the pixel limit (the corpus' 10^10-pixel PNG bomb: ok in 12.5 s at
    6.3 GB). Shown here safely with a small limit: a 2000x2000 watermark on a 1 MP limit was decoded."""
    from support.corpus import bad

    root = tmp_path / "root"
    src = make_tiny_image(root / "in" / "p.png", size=600)
    mark = root / "in" / "mark.png"
    pyvips.Image.black(2000, 2000, bands=3).pngsave(str(mark))
    bomb = root / "in" / "bomb.png"
    bomb.write_bytes(bad("bomb_100000x100000_1bit.png").read_bytes())
    with Gearmand() as server:
        w = worker_factory([server.address], [root], name="wm", extra=["--pipelines", str(REPO / "pipelines"),
                                                                        "--max-source-pixels", "1000000"])
        w.wait_ready()
        peak = vm_hwm_kb(w.pid)
        for watermark in (mark, bomb):
            result = job(server.address, {"src": src.as_uri(), "dst": (root / "out" / "z.jpg").as_uri(),
                                          "watermark": watermark.as_uri()}, function="product_zoom")
            assert code(result) == "LIMIT_EXCEEDED", result
            assert "watermark" in result["error"]["message"]
        ok = job(server.address, {"src": src.as_uri(), "dst": (root / "out" / "z.jpg").as_uri(),
                                  "watermark": (root / "in" / "p.png").as_uri()}, function="product_zoom")
        assert code(ok) == "ok", ok
        assert vm_hwm_kb(w.pid) - peak < 150_000  # KiB
