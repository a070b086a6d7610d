"""A job's ``callback`` URL and the worker's ``--callback-allow`` entries, parsed (features/callbacks.py
sends the callbacks; the contract refuses a malformed URL before any work).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from imgworker.core.errors import BadRequest, redact
from imgworker.core.urls import CONTROL_CHARACTERS

MAX_URL = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    path: str  # path and query, as sent in the request line

    def __str__(self) -> str:  # for logs: no query (it may carry a token)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path.split('?', 1)[0]}"


def _norm_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def parse_target(url: Any) -> Target:
    """A callback URL's parts, or BadRequest saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise BadRequest(f"'callback' must be an http:// or https:// URL, got {url!r}")
    if len(url) > MAX_URL or CONTROL_CHARACTERS.search(url) or any(c.isspace() for c in url):
        raise BadRequest(f"'callback' must be a URL of at most {MAX_URL} characters without spaces or controls")
    try:
        url.encode("ascii")
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, UnicodeEncodeError) as exc:
        raise BadRequest(f"'callback' is not a valid URL ({exc}); non-ASCII hosts must be punycode") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise BadRequest(f"'callback' must be an http:// or https:// URL with a host, got {redact(url)[:200]!r}")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("'callback' must not carry a user or password: the request is signed instead")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, _norm_host(parts.hostname), port or DEFAULT_PORTS[scheme], path)


def parse_allow(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; no port allows only the scheme's default port."""
    allowed: set[tuple[str, int | None]] = set()
    for raw in entries:
        entry = raw.strip()
        try:
            parts = urlsplit(f"//{entry}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host = port = None
        if not entry or not host or parts.path or parts.username is not None or "@" in entry:
            raise ValueError(f"--callback-allow {raw!r} must be HOST or HOST:PORT, e.g. hooks.example.com:443")
        allowed.add((_norm_host(host), port))
    return frozenset(allowed)
