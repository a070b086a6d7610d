"""No SSRF and no credentials in logs or results, checked on a real worker process.

http(s):// and other network schemes are refused outright (a loopback HTTP server proves no request is ever
made), s3:// is confined to the bucket allow-list, and a secret placed in the worker's environment, or in
a job's URL, appears in neither the worker's log nor any job result."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.fixtures_reliability import NamedWorker, make_tiny_image

from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand

ENV_SECRET = "imgwkrENVsecret+Q9/ZZ81"
ENV_KEY_ID = "AKIAIMGWKRENVMARKER9"
URL_SECRET = "imgwkrURLsecret77"


class Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"\xff\xd8\xff")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    Recorder.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


def submit_all(server: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    with SyncClient([server]) as client:
        for job in jobs:
            out.append(json.loads(client.submit("resize", json.dumps(job).encode(), timeout=30)))
    return out


def test_network_sources_are_refused_and_never_fetched(server: Gearmand, http_server: int,
                                                        worker_factory: Callable[..., NamedWorker],
                                                        tmp_path: Path) -> None:
    root = tmp_path / "root"
    src = make_tiny_image(root / "in" / "ok.png")
    worker_factory([server.address], [root]).wait_ready()
    dst = (root / "out" / "a.jpg").as_uri()
    port = http_server
    refused = [
        f"http://127.0.0.1:{port}/x.jpg",
        f"https://127.0.0.1:{port}/x.jpg",
        f"HTTP://localhost:{port}/x.jpg",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        f"http://[::1]:{port}/x.jpg",
        f"ftp://127.0.0.1:{port}/x.jpg",
    ]
    jobs = [{"src": url, "dst": dst, "width": 8} for url in refused]
    jobs += [{"src": src.as_uri(), "dst": f"http://127.0.0.1:{port}/upload.jpg", "width": 8}]
    jobs += [{"src": url, "dst": dst, "width": 8} for url in (f"gopher://127.0.0.1:{port}/", "dict://127.0.0.1/")]
    results = submit_all(server.address, jobs)
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in results]
    assert codes == ["FORBIDDEN_PATH"] * 7 + ["BAD_REQUEST"] * 2, codes
    assert Recorder.hits == [], "the worker made an HTTP request"
    assert "not allowed" in results[0]["error"]["message"]


def test_no_credentials_in_logs_or_results(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                                           tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tiny_image(root / "in" / "ok.png")
    (root / "in" / "text.jpg").write_text("not an image")
    env = {"AWS_SECRET_ACCESS_KEY": ENV_SECRET, "AWS_ACCESS_KEY_ID": ENV_KEY_ID}
    w = worker_factory([server.address], [root], env=env, extra=["--log-level", "debug"]).wait_ready()
    dst = (root / "out" / "a.jpg").as_uri()
    jobs: list[dict[str, Any]] = [
        {"src": (root / "in" / "missing.jpg").as_uri(), "dst": dst, "width": 8},
        {"src": (root / "in" / "text.jpg").as_uri(), "dst": dst, "width": 8},
        {"src": "file:///etc/shadow", "dst": dst, "width": 8},
        {"src": "s3://some-bucket/key.jpg", "dst": dst, "width": 8},
        {"src": f"s3://{ENV_KEY_ID}:{URL_SECRET}@some-bucket/key.jpg", "dst": dst, "width": 8},
        {"src": f"file://user:{URL_SECRET}@host/x.jpg", "dst": dst, "width": 8},
        {"src": f"http://user:{URL_SECRET}@127.0.0.1/x.jpg", "dst": dst, "width": 8},
        {"src": (root / "in" / "ok.png").as_uri(), "dst": f"file://u:{URL_SECRET}@h/x.jpg", "width": 8},
        {"src": (root / "in" / "ok.png").as_uri(), "dst": dst, "width": 8, "bogus": URL_SECRET[:3]},
    ]
    results = submit_all(server.address, jobs)
    assert all(not r["ok"] for r in results), results
    w.stop()
    text = w.log() + json.dumps(results)
    assert "job function=resize" in text  # the log was written and read
    for secret in (ENV_SECRET, ENV_KEY_ID, URL_SECRET):
        assert secret not in text, f"{secret!r} leaked into the worker log or a result"


def test_s3_bucket_allow_list(server: Gearmand, moto_s3: Any, s3_client: Any, s3_bucket: str,
                              s3_worker_factory: Callable[..., Any], tmp_path: Path) -> None:
    """The S3 helper's real moto server: buckets outside the allow-list are refused, the secret never shows."""
    from support.fixtures_s3 import TEST_SECRET

    other = f"{s3_bucket}-other"
    s3_client.create_bucket(Bucket=other)
    image = make_tiny_image(tmp_path / "i.png").read_bytes()
    s3_client.put_object(Bucket=other, Key="secret.png", Body=image)
    s3_client.put_object(Bucket=s3_bucket, Key="pub/ok.png", Body=image)
    s3_client.put_object(Bucket=s3_bucket, Key="private/ok.png", Body=image)
    w = s3_worker_factory(server.address, moto_s3.endpoint, [f"{s3_bucket}/pub"])
    w.wait_registered("resize")
    ok_dst = f"s3://{s3_bucket}/pub/out.jpg"
    jobs = [
        {"src": f"s3://{s3_bucket}/pub/ok.png", "dst": ok_dst, "width": 8},
        {"src": f"s3://{other}/secret.png", "dst": ok_dst, "width": 8},
        {"src": f"s3://{s3_bucket}/private/ok.png", "dst": ok_dst, "width": 8},
        {"src": f"s3://{s3_bucket}/pub/../private/ok.png", "dst": ok_dst, "width": 8},
        {"src": f"s3://{s3_bucket}/pub/ok.png", "dst": f"s3://{other}/stolen.jpg", "width": 8},
        {"src": f"s3://{s3_bucket}/pub/missing.png", "dst": ok_dst, "width": 8},
    ]
    results = submit_all(server.address, jobs)
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in results]
    assert codes == ["ok"] + ["FORBIDDEN_PATH"] * 4 + ["SOURCE_NOT_FOUND"], results
    assert "Contents" not in s3_client.list_objects_v2(Bucket=other, Prefix="stolen")
    w.stop()
    assert TEST_SECRET not in w.log() + json.dumps(results)
