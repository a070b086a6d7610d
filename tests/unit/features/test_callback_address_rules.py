"""Which callback URLs a worker may call (docs/contract.md, "Which hosts"): the URL's parts, the allow-list's
entries, exact host and port matching, and the addresses a name may resolve to (the address rule in full:
test_callback_address.py). One module, no network: the
end-to-end proof (a real worker calling real receivers) is tests/integration/test_callbacks.py."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Any

import pytest

from imgworker.core.callback_url import MAX_URL, Target, parse_allow, parse_target
from imgworker.core.contract import Payload, read_payload
from imgworker.core.errors import BadRequest, ForbiddenPath
from imgworker.core.limits import Limits
from imgworker.features.callbacks import AddressRefused, CallbackPolicy, resolve, sign


@pytest.mark.parametrize(("url", "target"), [
    ("http://h.example/cb", Target("http", "h.example", 80, "/cb")),
    ("HTTPS://H.Example./a/b?x=1&y=2", Target("https", "h.example", 443, "/a/b?x=1&y=2")),
    ("http://h.example", Target("http", "h.example", 80, "/")),
    ("http://h.example?q", Target("http", "h.example", 80, "/?q")),
    ("https://[::1]:9000/p", Target("https", "::1", 9000, "/p")),
    ("http://127.0.0.1:8080/", Target("http", "127.0.0.1", 8080, "/")),
])
def test_a_url_becomes_its_target(url: str, target: Target) -> None:
    assert parse_target(url) == target


@pytest.mark.parametrize(("url", "message"), [
    (None, "'callback' must be an http:// or https:// URL, got None"),
    ("", "'callback' must be an http:// or https:// URL, got ''"),
    (42, "'callback' must be an http:// or https:// URL, got 42"),
    ("http://h/" + "a" * MAX_URL, f"at most {MAX_URL} characters"),
    ("http://h/a b", "without spaces or controls"),
    ("http://h/a\tb", "without spaces or controls"),
    ("http://h/a\x7fb", "without spaces or controls"),
    ("http://h/a\x01b", "without spaces or controls"),
    ("http://hé.example/", "non-ASCII hosts must be punycode"),
    ("http://h:99999/", "is not a valid URL"),
    ("ftp://h/", "must be an http:// or https:// URL with a host, got 'ftp://h/'"),
    ("http:///path", "with a host"),
    ("https://u:secretpw@h/", "'callback' must not carry a user or password: the request is signed instead"),
    ("https://u@h/", "'callback' must not carry a user or password: the request is signed instead"),
])
def test_a_bad_url_says_what_is_wrong(url: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_target(url)
    assert message in info.value.message
    assert info.value.message.startswith("'callback' ") and "secretpw" not in info.value.message


def test_a_long_bad_url_is_quoted_to_200_characters() -> None:
    url = "ftp://h/" + "p" * 300
    with pytest.raises(BadRequest) as info:
        parse_target(url)
    assert info.value.message == f"'callback' must be an http:// or https:// URL with a host, got {url[:200]!r}"


def test_a_url_of_exactly_the_maximum_length_is_accepted() -> None:
    url = "http://h/" + "a" * (MAX_URL - len("http://h/"))
    assert len(url) == MAX_URL and parse_target(url).path == "/" + "a" * (MAX_URL - 9)


def test_targets_print_without_their_query() -> None:
    assert str(parse_target("http://h:1/p?token=abc")) == "http://h:1/p"
    assert str(parse_target("http://h:1/p?a=1?b=2")) == "http://h:1/p"
    assert str(parse_target("https://[::1]/p")) == "https://[::1]:443/p"


def test_allow_entries() -> None:
    assert parse_allow([" Hooks.Example.COM. ", "127.0.0.1:8080", "[::1]:9000", "[fe80::1]"]) == frozenset(
        {("hooks.example.com", None), ("127.0.0.1", 8080), ("::1", 9000), ("fe80::1", None)})
    for bad in ("", " ", "http://h/", "h/path", "u@h", "h:port", "h:99999", "[::1"):
        with pytest.raises(ValueError, match="must be HOST or HOST:PORT"):
            parse_allow([bad])


def test_the_policy_matches_host_and_port_exactly() -> None:
    policy = CallbackPolicy(["hooks.example.com", "127.0.0.1:8080", "[::1]:9000"])
    assert policy.check("https://hooks.example.com/cb").port == 443
    assert policy.check("http://hooks.example.com/cb").port == 80
    assert policy.check("http://127.0.0.1:8080/x") == Target("http", "127.0.0.1", 8080, "/x")
    assert policy.check("http://[::1]:9000/").host == "::1"
    for url in ("https://hooks.example.com:8443/", "http://127.0.0.1:8081/", "http://127.0.0.1/",
                "http://evil.hooks.example.com/", "http://hooks.example.com.evil.net/", "http://[::1]:9001/"):
        with pytest.raises(ForbiddenPath, match="is not on this worker's --callback-allow list"):
            policy.check(url)
    with pytest.raises(ForbiddenPath) as info:
        CallbackPolicy([]).check("http://127.0.0.1:8080/")
    assert info.value.message == "callbacks are not enabled on this worker (--callback-allow HOST[:PORT])"
    with pytest.raises(BadRequest):
        policy.check("ftp://hooks.example.com/")  # malformed before it is compared


def test_precheck_reads_the_payloads_callback() -> None:
    policy = CallbackPolicy(["h.example"])

    def payload(data: bytes) -> Payload:
        return read_payload(data, Limits())  # decoded once, as the worker does; the check reads its fields

    policy.precheck(payload(b'{"callback": "https://h.example/cb"}'))
    policy.precheck(payload(b'{"width": 3}'))  # none: nothing to check
    policy.precheck(payload(b"not json"))  # the contract refuses it, with the reason
    policy.precheck(payload(b"[" * 100000))
    with pytest.raises(ForbiddenPath):
        policy.precheck(payload(b'{"callback": "https://other.example/cb"}'))


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
    assert sign(b"what do ya want for nothing?", "Jefe") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_literals_pass_when_listed_and_names_resolve_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # One rule for literals and names (callback_address.py): a refused address passes only when listed exactly.
    meta, loop6 = ip_address("169.254.169.254"), ip_address("::1")
    assert resolve(Target("http", "169.254.169.254", 80, "/"), {meta}) == ("169.254.169.254", 80)  # on purpose
    assert resolve(Target("http", "::1", 81, "/"), {loop6}) == ("::1", 81)
    with pytest.raises(AddressRefused) as refused:
        resolve(Target("http", "169.254.169.254", 80, "/"))
    assert str(refused.value) == ("169.254.169.254 resolves only to addresses callbacks may not reach: "
                                  "169.254.169.254 is a cloud metadata address")
    real = socket.getaddrinfo
    answers = {"ok.test": "127.0.0.1", "meta.test": "169.254.169.254", "v6ll.test": "fe80::1%lo",
               "mc.test": "224.0.0.1", "any.test": "0.0.0.0", "v6.test": "::1", "web.test": "93.184.215.14"}

    def fake(host: str, *args: Any, **kw: Any) -> Any:
        return [] if host == "none.test" else real(answers[host], *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert resolve(Target("http", "web.test", 8080, "/")) == ("93.184.215.14", 8080)
    listed = {ip_address("127.0.0.1"), loop6}
    assert resolve(Target("http", "ok.test", 8080, "/"), listed) == ("127.0.0.1", 8080)
    assert resolve(Target("http", "v6.test", 8080, "/"), listed) == ("::1", 8080)
    # v6ll.test answers with a scope (fe80::1%lo), as a link-local IPv6 address comes back from getaddrinfo.
    for host, why in (("ok.test", "127.0.0.1 is loopback"),
                      ("meta.test", "169.254.169.254 is a cloud metadata address"),
                      ("v6ll.test", "fe80::1 is link-local"), ("mc.test", "224.0.0.1 is multicast"),
                      ("any.test", "0.0.0.0 is unspecified")):
        with pytest.raises(AddressRefused) as refused:
            resolve(Target("http", host, 80, "/"))
        assert str(refused.value) == f"{host} resolves only to addresses callbacks may not reach: {why}"
    with pytest.raises(OSError, match=r"none\.test does not resolve"):
        resolve(Target("http", "none.test", 80, "/"))
