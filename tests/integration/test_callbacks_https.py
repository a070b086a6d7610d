"""HTTPS callbacks against real TLS servers with certificates made at test time (a CA trusted through
SSL_CERT_FILE, as an operator would add their own): the certificate is checked against the callback's name
while the connection goes to the address resolved once (pinning), and a wrong name or an untrusted issuer
gets no POST at all."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.corpus import photo
from support.workerproc import WorkerProc

from imgworker.core.contract import Payload
from imgworker.features.callbacks import SIGNATURE_HEADER, CallbackPolicy, CallbackSender, Delivery
from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand

NO_PAYLOAD = Payload(b"{}", {}, None)
SECRET = "cb-TLS-secret-51c0a2"
NAME = "hooks.test"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          sans: list[x509.GeneralName], ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    """A CA (its PEM is what SSL_CERT_FILE trusts) and the server certificates the tests present."""

    dir: Path
    ca_file: Path
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # kind -> (cert, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("imgworker test CA", ca_key, None, [], ca=True)
    out = Pki(d, d / "ca.pem")
    out.ca_file.write_bytes(_pem(ca))
    issuer = (ca.subject, ca_key)
    rogue_key = _key()
    cases: list[tuple[str, list[x509.GeneralName], tuple[x509.Name, ec.EllipticCurvePrivateKey] | None]] = [
        ("good", [x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], issuer),
        ("other_name", [x509.DNSName("other.test")], issuer),
        ("untrusted", [x509.DNSName(NAME)], None),  # self-signed: no CA the worker trusts issued it
    ]
    for kind, sans, by in cases:
        key = rogue_key if by is None else _key()
        cert = _cert(NAME if kind != "other_name" else "other.test", key, by, sans)
        cert_path, key_path = d / f"{kind}.pem", d / f"{kind}.key"
        cert_path.write_bytes(_pem(cert))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        out.certs[kind] = (cert_path, key_path)
    return out


class TlsReceiver:
    """An HTTPS server on 127.0.0.1 presenting one certificate; records each POST it gets."""

    def __init__(self, cert: tuple[Path, Path]) -> None:
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def trusted(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Pki:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))  # read by ssl.create_default_context at each connect
    real = socket.getaddrinfo
    # hooks.test is no real name: it resolves to the receiver here, once per delivery (the pinned address).
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **kw: real("127.0.0.1" if host == NAME else host, *a, **kw))
    return pki


def _deliver(port: int) -> tuple[bool, list[str]]:
    given_up: list[str] = []
    policy = CallbackPolicy([f"{NAME}:{port}", "127.0.0.1:1"])  # the name's loopback address, listed exactly
    sender = CallbackSender(policy, SECRET, tries=2, timeout=5, backoff=0.01, senders=1,
                            give_up=lambda d, reason, tries: given_up.append(reason))
    try:
        target = policy.check(f"https://{NAME}:{port}/tls")
        return sender.deliver(Delivery(target, b'{"ok":true}', "resize", NO_PAYLOAD, "t1")), given_up
    finally:
        sender.close(1)


def test_https_callback_checks_the_name_on_the_pinned_address(trusted: Pki) -> None:
    receiver = TlsReceiver(trusted.certs["good"])
    try:
        ok, given_up = _deliver(receiver.port)
        assert ok is True and given_up == []
        (req,) = receiver.requests
        assert req["path"] == "/tls" and req["headers"]["Host"] == f"{NAME}:{receiver.port}"
        expected = "sha256=" + hmac.new(SECRET.encode(), b'{"ok":true}', hashlib.sha256).hexdigest()
        assert req["headers"][SIGNATURE_HEADER] == expected
    finally:
        receiver.stop()


@pytest.mark.parametrize("kind", ["other_name", "untrusted"])
def test_https_callback_with_a_bad_certificate_posts_nothing(trusted: Pki, kind: str) -> None:
    receiver = TlsReceiver(trusted.certs[kind])
    try:
        ok, given_up = _deliver(receiver.port)
        assert ok is False
        assert given_up == ["connection failed (SSLCertVerificationError)"]
        assert receiver.requests == []  # the body never left: the handshake failed first
    finally:
        receiver.stop()


@pytest.fixture
def worker_env(pki: Pki, tmp_path: Path) -> Iterator[tuple[SyncClient, TlsReceiver, Path]]:
    receiver = TlsReceiver(pki.certs["good"])
    (tmp_path / "out").mkdir()
    try:
        with Gearmand() as g:
            worker = WorkerProc([g.address], [tmp_path, photo("dragonfly").parent],
                                "--callback-allow", f"127.0.0.1:{receiver.port}", "--callback-timeout", "5",
                                env={"IMGWORKER_CALLBACK_SECRET": SECRET, "SSL_CERT_FILE": str(pki.ca_file)})
            with worker, SyncClient([g.address]) as client:
                yield client, receiver, tmp_path
    finally:
        receiver.stop()


def test_worker_posts_the_result_over_https(worker_env: tuple[SyncClient, TlsReceiver, Path]) -> None:
    """The whole path: a resize job through gearmand, its result POSTed over TLS to an address-SAN cert."""
    client, receiver, root = worker_env
    dst = (root / "out" / "tls.jpg").as_uri()
    payload = {"src": photo("dragonfly").as_uri(), "dst": dst, "width": 64, "id": "tls-1",
               "callback": f"https://127.0.0.1:{receiver.port}/done"}
    result = json.loads(client.submit("resize", json.dumps(payload).encode(), timeout=60))
    assert result["dst"] == dst
    deadline = time.monotonic() + 30
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    (req,) = receiver.requests
    body = json.loads(req["body"])
    assert body["id"] == "tls-1" and body["dst"] == dst and body["width"] == 64
    assert req["headers"][SIGNATURE_HEADER] == "sha256=" + hmac.new(SECRET.encode(), req["body"],
                                                                     hashlib.sha256).hexdigest()
