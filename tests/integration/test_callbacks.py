"""HTTP callbacks end to end: a real gearmand, a real worker process, real HTTP servers receiving the POSTs
(one that answers 200, one that answers 500 first, one that hangs, one that redirects), the PHP and Node
receivers in examples/ verifying real signatures, and hosts outside the allow-list refused before any work."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.corpus import photo
from support.receivers import Receiver
from support.workerproc import REPO, WorkerProc

from imgworker.core.config import ConfigError, load
from imgworker.core.contract import Payload, parse_request
from imgworker.core.errors import BadRequest, ForbiddenPath
from imgworker.core.limits import Limits
from imgworker.features.callbacks import SIGNATURE_HEADER, CallbackPolicy, CallbackSender, Delivery, parse_target
from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand
from imgworker.testing.ports import reserve_port as free_port  # held until the server binds it

NO_PAYLOAD = Payload(b"{}", {}, None)
SECRET = "cb-TEST-secret-9f3e1d7c"


@dataclass
class Env:
    gearmand: Gearmand
    worker: WorkerProc
    root: Path
    ok: Receiver
    flaky: Receiver
    throttled: Receiver
    hang: Receiver
    redirect: Receiver
    php_port: int
    node_port: int
    metrics_port: int
    client: SyncClient
    n: int = 0

    def payload(self, callback: str | None, **extra: Any) -> dict[str, Any]:
        self.n += 1
        src = extra.pop("src", photo("dragonfly").as_uri())
        body = {"src": src, "dst": (self.root / "out" / f"cb{self.n}.jpg").as_uri(), "width": 64,
                "id": f"job-{self.n}", **extra}
        if callback is not None:
            body["callback"] = callback
        return body

    def run(self, payload: dict[str, Any], function: str = "resize") -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.client.submit(function, json.dumps(payload).encode(), timeout=60))
        return result

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "failed").glob("*.json"))]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("cbroot")
    (root / "out").mkdir()
    (root / "failed").mkdir()
    receivers = [Receiver(m).start() for m in ("ok", "fail_first", "throttle_first", "hang", "redirect")]
    ok, flaky, throttled, hang, redirect = receivers
    php_port, node_port, metrics_port = free_port(), free_port(), free_port()
    allow = [f"127.0.0.1:{r.port}" for r in receivers] + [
        f"127.0.0.1:{php_port}", f"localhost:{node_port}"]
    args = ["--failed-jobs", (root / "failed").as_uri(), "--callback-timeout", "1", "--callback-tries", "3",
            "--retry-backoff", "0.05", "--concurrency", "2", "--metrics-port", str(metrics_port),
            "--metrics-host", "127.0.0.1", "--pipelines", str(REPO / "pipelines")]
    for a in allow:
        args += ["--callback-allow", a]
    with Gearmand() as g:
        worker = WorkerProc([g.address], [root, photo("dragonfly").parent], *args,
                            env={"IMGWORKER_CALLBACK_SECRET": SECRET})
        with worker, SyncClient([g.address]) as client:
            yield Env(g, worker, root, ok, flaky, throttled, hang, redirect, php_port, node_port, metrics_port,
                      client)
    for r in receivers:
        r.stop()


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_success_posts_signed_result(env: Env) -> None:
    payload = env.payload(env.ok.url("/done?upload=7"))
    result = env.run(payload)
    assert result["ok"] is True
    (req,) = env.ok.for_path("/done?upload=7")
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"][SIGNATURE_HEADER] == signature(req["body"])
    body = json.loads(req["body"])
    assert body["ok"] is True and body["id"] == payload["id"] and body["dst"] == payload["dst"]
    assert body["function"] == "resize" and body["width"] == 64
    assert SECRET not in env.worker.log()


def test_failure_posts_error(env: Env) -> None:
    payload = env.payload(env.ok.url("/failed"), src=(env.root / "missing.jpg").as_uri())
    result = env.run(payload)
    assert result["error"]["code"] == "SOURCE_NOT_FOUND"
    (req,) = env.ok.for_path("/failed")
    body = json.loads(req["body"])
    assert body["ok"] is False and body["error"]["code"] == "SOURCE_NOT_FOUND" and body["id"] == payload["id"]
    assert req["headers"][SIGNATURE_HEADER] == signature(req["body"])


def test_pipeline_job_calls_back_and_is_refused_alike(env: Env) -> None:
    payload = env.payload(env.ok.url("/avatar"), size=64)
    del payload["width"]
    assert env.run(payload, "avatar")["ok"] is True
    (req,) = env.ok.for_path("/avatar")
    body = json.loads(req["body"])
    assert body["ok"] is True and body["pipeline"] == "avatar" and body["function"] == "avatar"
    assert req["headers"][SIGNATURE_HEADER] == signature(req["body"])
    refused = {**payload, "callback": f"http://127.0.0.2:{env.ok.port}/avatar", "dst": payload["dst"] + ".2.webp"}
    assert env.run(refused, "avatar")["error"]["code"] == "FORBIDDEN_PATH"
    assert not Path(refused["dst"][len("file://"):]).exists()


def test_server_error_is_retried(env: Env) -> None:
    assert env.run(env.payload(env.flaky.url("/flaky")))["ok"] is True
    first, second = env.flaky.for_path("/flaky", n=2)
    assert first["body"] == second["body"]  # the same signed body, sent again after the 500
    assert second["headers"][SIGNATURE_HEADER] == signature(second["body"])


def test_too_many_requests_is_retried(env: Env) -> None:
    """docs/contract.md, "Retries": a 429 is retried like a 5xx, with the same signed body."""
    payload = env.payload(env.throttled.url("/throttled"))
    assert env.run(payload)["ok"] is True
    first, second = env.throttled.for_path("/throttled", n=2)
    assert first["body"] == second["body"] and json.loads(second["body"])["id"] == payload["id"]
    assert second["headers"][SIGNATURE_HEADER] == signature(second["body"])


def test_other_client_errors_are_not_retried() -> None:
    """The control for the 429 test: a 404 ends delivery at its first answer (the sender, on a real server)."""
    receiver = Receiver("reject").start()
    given_up: list[tuple[str, int]] = []
    policy = CallbackPolicy([f"127.0.0.1:{receiver.port}"])
    sender = CallbackSender(policy, SECRET, tries=3, timeout=5, backoff=0.01, senders=1,
                            give_up=lambda d, reason, tries: given_up.append((reason, tries)))
    try:
        target = policy.check(receiver.url("/gone"))
        assert sender.deliver(Delivery(target, b'{"ok":true}', "resize", b"{}", "u404")) is False
        assert given_up == [("HTTP 404", 1)]
        assert len(receiver.requests) == 1
    finally:
        sender.close(1)
        receiver.stop()


def test_hanging_callback_blocks_nothing_then_gives_up(env: Env) -> None:
    before = len(env.records())
    hanging = env.payload(env.hang.url("/hang"))
    assert env.run(hanging)["ok"] is True  # the job's own result is unchanged
    env.hang.for_path("/hang")  # the receiver holds this connection open
    # Meanwhile other jobs and their callbacks go through (4 sender threads; one is stuck).
    for i in range(3):
        assert env.run(env.payload(env.ok.url(f"/while-hanging-{i}")))["ok"] is True
        env.ok.for_path(f"/while-hanging-{i}")
    # A ceiling, not a bound: 3 tries of a 1 s timeout and short backoffs take ~3.2 s.
    rec = _wait_record(env, lambda r: r["payload"].get("id") == hanging["id"], 40)
    assert len(env.records()) > before
    assert rec["error"]["code"] == "UNAVAILABLE" and rec["attempts"] == 3
    reason = rec["callback"]["reason"]
    assert "TimeoutError" in reason or "timeout" in reason.lower() or "deadline" in reason, reason
    assert len(env.hang.for_path("/hang", n=3)) == 3  # every try reached the server: tries, not a crash


def test_redirect_is_not_followed(env: Env) -> None:
    assert env.run(env.payload(env.redirect.url("/moved")))["ok"] is True
    assert len(env.redirect.for_path("/moved")) == 1
    rec = _wait_record(env, lambda r: "/moved" in r["callback"]["url"], 20)
    assert rec["callback"]["reason"] == "HTTP 302" and rec["attempts"] == 1
    # The record is written when delivery has ended, so no second try can follow it.
    assert len([r for r in env.redirect.requests if r["path"] == "/moved"]) == 1


@pytest.mark.parametrize(
    "make_url, code",
    [
        (lambda e: f"http://127.0.0.1:{e.ok.port + 1 if e.ok.port < 65535 else 1}/x", "FORBIDDEN_PATH"),
        (lambda e: f"http://127.0.0.2:{e.ok.port}/x", "FORBIDDEN_PATH"),
        (lambda e: f"http://[::1]:{e.ok.port}/x", "FORBIDDEN_PATH"),
        (lambda e: "http://169.254.169.254/latest/meta-data/", "FORBIDDEN_PATH"),
        (lambda e: f"http://localhost:{e.ok.port}/x", "FORBIDDEN_PATH"),  # resolves to loopback, not listed
        (lambda e: f"http://2130706433:{e.ok.port}/x", "FORBIDDEN_PATH"),  # 127.0.0.1 as one number
        (lambda e: f"http://user:pw@127.0.0.1:{e.ok.port}/x", "BAD_REQUEST"),
        (lambda e: f"ftp://127.0.0.1:{e.ok.port}/x", "BAD_REQUEST"),
        (lambda e: "file:///etc/passwd", "BAD_REQUEST"),
        (lambda e: 42, "BAD_REQUEST"),
    ],
)
def test_callback_not_allowed_is_refused_before_work(env: Env, make_url: Any, code: str) -> None:
    payload = env.payload(make_url(env))
    before = len(env.ok.requests)
    result = env.run(payload)
    assert result["ok"] is False and result["error"]["code"] == code, result
    assert not Path(payload["dst"][len("file://"):]).exists()  # refused before any work
    # A barrier instead of a sleep: a later job's callback to the same receiver arrives, and it is the only
    # request since (callbacks leave in the order jobs end; the refused one, had it been queued, came first).
    marker = f"/after-refusal-{env.n}"
    assert env.run(env.payload(env.ok.url(marker)))["ok"] is True
    env.ok.for_path(marker)
    assert [r["path"] for r in env.ok.requests[before:]] == [marker]


def test_php_receiver_verifies_real_callback(env: Env, tmp_path: Path) -> None:
    log = tmp_path / "php.log"
    php = subprocess.Popen(
        ["php", "-S", f"127.0.0.1:{env.php_port}", str(REPO / "examples" / "callback_receiver.php")],
        env={**os.environ, "CALLBACK_SECRET": SECRET, "CALLBACK_LOG": str(log)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(env.php_port)
        payload = env.payload(f"http://127.0.0.1:{env.php_port}/hook")
        assert env.run(payload)["ok"] is True
        line = _wait_line(log)
        assert line == {"id": payload["id"], "ok": True, "code": "ok", "verified": True}
        # The same receiver refuses a body whose signature does not match (a forged callback).
        assert _post(env.php_port, b'{"ok":true,"id":"forged"}', signature(b"something else")) == 401
        assert _post(env.php_port, b'{"ok":true,"id":"forged"}', None) == 401
        assert len(log.read_text().splitlines()) == 1
    finally:
        php.terminate()
        php.wait(10)


def test_node_receiver_verifies_real_callback(env: Env, tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    node = subprocess.Popen(
        ["node", str(REPO / "examples" / "node" / "callback_receiver.js"), str(env.node_port), "127.0.0.1"],
        env={**os.environ, "CALLBACK_SECRET": SECRET, "CALLBACK_LOG": str(log)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(env.node_port)
        # Allowed as localhost:PORT: the worker resolves the name once and connects to that address.
        payload = env.payload(f"http://localhost:{env.node_port}/hook", src=(env.root / "nope.jpg").as_uri())
        assert env.run(payload)["error"]["code"] == "SOURCE_NOT_FOUND"
        assert _wait_line(log) == {"id": payload["id"], "ok": False, "code": "SOURCE_NOT_FOUND", "verified": True}
        assert _post(env.node_port, b'{"ok":true}', signature(b'{"ok":false}')) == 401
        assert len(log.read_text().splitlines()) == 1
    finally:
        node.terminate()
        node.wait(10)


def _metrics(env: Env) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{env.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_callbacks_and_records(env: Env) -> None:
    """Its own callbacks, counted as differences: one sent at once, one sent after a 500, one redirect given up
    (and recorded). Whatever ran before (in any order) does not change the differences."""
    counters = [("imgworker_callbacks_total", (("outcome", "sent"),)),
                ("imgworker_callbacks_total", (("outcome", "failed"),)),
                ("imgworker_callbacks_total", (("outcome", "given_up"),)),
                ("imgworker_failed_job_records_total", (("result", "written"),))]
    before, records = _metrics(env), len(env.records())
    for url in (env.ok.url("/counted"), env.flaky.url("/counted"), env.redirect.url("/counted")):
        assert env.run(env.payload(url))["ok"] is True
    want = {counters[0]: 2, counters[1]: 2, counters[2]: 1, counters[3]: 1}  # the 500 and the 302 failed

    def deltas() -> dict[Any, float]:
        now = _metrics(env)
        return {k: now.get(k, 0.0) - before.get(k, 0.0) for k in counters}

    deadline = time.monotonic() + 30  # a ceiling: the deliveries take well under a second
    while deltas() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert deltas() == want
    assert len(env.records()) == records + 1


def _wait_record(env: Env, match: Any, timeout: float) -> dict[str, Any]:
    """The first callback record that ``match`` accepts, waited for up to ``timeout`` s (a ceiling)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in env.records() if r["kind"] == "callback" and match(r)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no matching callback record in {timeout} s")
        time.sleep(0.05)


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def _wait_line(path: Path, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return dict(json.loads(path.read_text().splitlines()[0]))
        time.sleep(0.05)
    raise TimeoutError(f"{path} stayed empty")


def _post(port: int, body: bytes, sig: str | None) -> int:
    headers = {"Content-Type": "application/json", **({SIGNATURE_HEADER: sig} if sig else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hook", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- one module at a time: the contract, the allow-list, the sender's address pinning ----------------------


def test_contract_accepts_callback_on_resize_and_pipeline_jobs() -> None:
    job = {"src": "file:///in/a.jpg", "dst": "file:///out/a.jpg", "width": 10, "callback": "https://h.example/cb"}
    assert parse_request(json.dumps(job).encode(), Limits()).callback == "https://h.example/cb"
    piped = parse_request(json.dumps({**job, "quality": 70}).encode(), Limits(), pipeline="thumbs")
    assert piped.callback == "https://h.example/cb" and "callback" not in piped.overrides
    with pytest.raises(BadRequest, match="callback"):
        parse_request(json.dumps({**job, "callback": "javascript:alert(1)"}).encode(), Limits())
    with pytest.raises(BadRequest, match="did you mean 'callback'"):
        parse_request(json.dumps({**{k: v for k, v in job.items() if k != "callback"}, "calback": "x"}).encode(),
                      Limits())


def test_policy_matches_host_and_port_exactly() -> None:
    policy = CallbackPolicy(["hooks.example.com", "127.0.0.1:8080", "[::1]:9000"])
    assert policy.check("https://HOOKS.example.com./cb").port == 443
    assert policy.check("http://hooks.example.com/cb").port == 80
    assert policy.check("http://[::1]:9000/").host == "::1"
    for url in ("https://hooks.example.com:8443/", "http://127.0.0.1:8081/", "http://evil.hooks.example.com/",
                "http://hooks.example.com.evil.net/", "http://[::1]:9001/", "http://[fe80::1]:9000/"):
        with pytest.raises(ForbiddenPath):
            policy.check(url)
    with pytest.raises(ForbiddenPath, match="not enabled"):
        CallbackPolicy([]).check("http://127.0.0.1:8080/")
    with pytest.raises(ValueError):
        CallbackPolicy(["http://x/"])
    assert str(parse_target("http://h:1/p?token=abc")) == "http://h:1/p"  # logs never show the query


def test_sender_resolves_once_and_pins_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is resolved once per delivery; the retry after a 500 goes to that address even if DNS changes."""
    receiver = Receiver("fail_first").start()
    calls: list[str] = []
    real = socket.getaddrinfo

    def fake_getaddrinfo(host: str, *args: Any, **kw: Any) -> Any:
        calls.append(host)
        # First answer: the receiver. Any later answer would point at a port nobody listens on.
        target = "127.0.0.1" if len(calls) == 1 else "127.0.0.3"
        return real(target, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    # 127.0.0.1 listed: the exact loopback address the name resolves to may be reached (callback_address.py).
    policy = CallbackPolicy([f"hooks.test:{receiver.port}", "127.0.0.1:1"])
    sender = CallbackSender(policy, SECRET, tries=3, timeout=2, backoff=0.01, senders=1)
    try:
        target = policy.check(f"http://hooks.test:{receiver.port}/pinned")
        assert sender.deliver(Delivery(target, b'{"ok":true}', "resize", NO_PAYLOAD, "u1")) is True
        first, second = receiver.for_path("/pinned", n=2)
        assert calls == ["hooks.test"]
        assert first["headers"]["Host"] == f"hooks.test:{receiver.port}"
        assert second["headers"][SIGNATURE_HEADER] == signature(b'{"ok":true}')
    finally:
        sender.close(1)
        receiver.stop()


def test_config_validates_the_new_options() -> None:
    cfg = load(environ={"IMGWORKER_CALLBACK_ALLOW": "hooks.example.com, 127.0.0.1:8080",
                        "IMGWORKER_CALLBACK_SECRET": SECRET, "IMGWORKER_RETRIES": "0"})
    assert cfg.callback_allow == ["hooks.example.com", "127.0.0.1:8080"] and cfg.retries == 0
    assert SECRET not in repr(cfg)  # the key never reaches a log line through the config's repr
    for bad, message in [
        ({"IMGWORKER_CALLBACK_ALLOW": "hooks.example.com"}, "IMGWORKER_CALLBACK_SECRET"),
        ({"IMGWORKER_CALLBACK_ALLOW": "http://hooks.example.com/", "IMGWORKER_CALLBACK_SECRET": "k"}, "HOST:PORT"),
        ({"IMGWORKER_FAILED_JOBS": "/srv/failed"}, "file:/// or s3://"),
        ({"IMGWORKER_RETRIES": "-1"}, "--retries"),
        ({"IMGWORKER_CALLBACK_TRIES": "0"}, "--callback-tries"),
        ({"IMGWORKER_CALLBACK_ALOW": "x"}, "did you mean IMGWORKER_CALLBACK_ALLOW"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(environ=bad)


def test_an_allowed_name_resolving_to_link_local_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **kw: real("169.254.169.254", *a, **kw))
    given_up: list[str] = []
    policy = CallbackPolicy(["hooks.test:80"])
    sender = CallbackSender(policy, SECRET, tries=3, timeout=1, backoff=0.01, senders=1,
                            give_up=lambda d, reason, tries: given_up.append(f"{tries}: {reason}"))
    try:
        target = policy.check("http://hooks.test/cb")
        assert sender.deliver(Delivery(target, b"{}", "resize", NO_PAYLOAD, "u2")) is False
        assert given_up == ["1: hooks.test resolves only to addresses callbacks may not reach: "
                            "169.254.169.254 is a cloud metadata address"]
    finally:
        sender.close(1)
