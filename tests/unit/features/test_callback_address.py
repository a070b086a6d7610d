"""The callback address rule (imgworker/features/callback_address.py) and its use by ``callbacks.resolve``:
every translated form of a refused address is refused; ordinary addresses pass; the operator's exact
addresses pass. The end-to-end proof, in a private network namespace, is tests/reliability/
test_callback_addresses.py."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from imgworker.core.callback_url import parse_target
from imgworker.features.callback_address import embedded_ipv4, refusal
from imgworker.features.callbacks import AddressRefused, CallbackPolicy, resolve

REFUSED = [
    "169.254.169.254", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "::169.254.169.254",  # mapped, compatible
    "2002:a9fe:a9fe::1", "64:ff9b::169.254.169.254", "64:ff9b:1::a9fe:a9fe", "::ffff:0:a9fe:a9fe",  # 6to4, NAT64
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo whose client (obfuscated) is 169.254.169.254
    "fd00:ec2::254", "fd00:ec2::253", "100.100.100.200", "168.63.129.16", "169.254.170.2",
    "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::",
    "0.0.0.0", "0.0.0.1", "::", "::ffff:0.0.0.0",
    "fe80::1", "169.254.0.7", "fc00::1", "fd12:3456::1",
    "224.0.0.1", "ff02::1", "::ffff:224.0.0.1", "255.255.255.255", "240.0.0.1",
]
ALLOWED = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:93.184.215.14", "2002:5db8:d70e::",
           "64:ff9b::93.184.215.14", "10.1.2.3", "192.168.1.10", "198.51.100.7"]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_in_every_form(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_ordinary_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_forms_are_unwrapped_to_the_ipv4_they_carry() -> None:
    meta = ipaddress.IPv4Address("169.254.169.254")
    for form in ("::ffff:169.254.169.254", "::169.254.169.254", "2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe",
                 "::ffff:0:a9fe:a9fe", "2001:0:4136:e378:8000:63bf:5601:5601"):
        assert embedded_ipv4(ipaddress.ip_address(form)) == meta, form
    assert embedded_ipv4(ipaddress.ip_address("::1")) is None  # loopback itself, not 0.0.0.1
    assert "carries 169.254.169.254" in (refusal(ipaddress.ip_address("::ffff:169.254.169.254")) or "")


def test_the_operators_exact_address_passes() -> None:
    allowed = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("fd00:ec2::254")]
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None  # the same address, mapped
    assert refusal(ipaddress.ip_address("fd00:ec2::254"), allowed) is None
    assert refusal(ipaddress.ip_address("127.0.0.2"), allowed) is not None  # exact, not the range


def test_policy_takes_its_exact_addresses_from_the_allow_list() -> None:
    policy = CallbackPolicy(["hooks.example.com", "127.0.0.1:8080", "[fd00:ec2::254]:80"])
    assert policy.addresses == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("fd00:ec2::254")}


def test_resolve_applies_the_rule_to_literals_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listed literal passes; an unlisted one (how could it be? a name list entry that is a number) does not.
    assert resolve(parse_target("http://127.0.0.1:8080/x"), {ipaddress.ip_address("127.0.0.1")}) == ("127.0.0.1", 8080)
    with pytest.raises(AddressRefused):
        resolve(parse_target("http://[::ffff:169.254.169.254]/x"))
    answers = {
        "mapped.test": ["::ffff:169.254.169.254"],
        "mixed.test": ["fd00:ec2::254", "93.184.215.14"],  # the first is refused, the next is used
    }

    def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(AddressRefused, match="may not reach"):
        resolve(parse_target("http://mapped.test/x"))
    assert resolve(parse_target("http://mixed.test/x")) == ("93.184.215.14", 80)
