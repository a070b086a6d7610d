"""Which addresses a callback may reach: one rule, applied to every address a callback would connect to.

An address is first unwrapped to the IPv4 address it carries, if any (IPv4-mapped ``::ffff:a.b.c.d``,
SIIT ``::ffff:0:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``, NAT64 ``64:ff9b::a.b.c.d``
and ``64:ff9b:1::/48``, Teredo's client): the kernel or a translator on the way delivers those to the IPv4
address, so ``::ffff:169.254.169.254`` is the metadata service. Then the address and what it carries are each
refused when loopback, link-local, unique-local, unspecified ("this network" 0.0.0.0/8 too: Linux connects
0.0.0.1 to itself), multicast, reserved / broadcast, or a known cloud metadata address; unless the operator
listed that exact address as a ``--callback-allow`` entry (docs/security.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata and host-agent endpoints reachable from a VM or pod (most are link-local anyway;
# named so that a change to the ranges below cannot let them through).
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.253",  # AWS VPC DNS
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fd00:ec2::253",  # AWS VPC DNS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure WireServer
    "192.0.0.192",  # Oracle Cloud (legacy)
))
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def parse_ip(text: str) -> IP | None:
    """``text`` as an address (an IPv6 zone ``%eth0`` dropped), or None when it is a name."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def embedded_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries in one of the translation forms, or None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIIT or any(ip in net for net in _NAT64):
        return low32  # the /96 layout: the last 32 bits (a 64:ff9b:1::/48 prefix is operator-chosen; assume /96)
    if ip in _COMPATIBLE and int(ip) > 1:  # not :: or ::1, which are themselves
        return low32
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _why(ip: IP) -> str | None:
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        return "unique-local"
    if isinstance(ip, ipaddress.IPv4Address) and (ip.is_reserved or ip == _BROADCAST):
        return "reserved"
    return None


def refusal(ip: IP, allowed: Iterable[IP] = ()) -> str | None:
    """Why a callback may not connect to ``ip`` (None: it may). ``allowed``: addresses the operator listed."""
    inner = embedded_ipv4(ip)
    listed = set(allowed)
    if ip in listed or (inner is not None and inner in listed):
        return None
    for candidate in (ip, inner):
        if candidate is not None:
            why = _why(candidate)
            if why is not None:
                via = f" (it carries {candidate})" if candidate is not ip else ""
                return f"{ip} is {why}{via}"
    return None
