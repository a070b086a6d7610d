"""``imgworker health``: ask a worker's /healthz (or /readyz) and exit 0 when it is green, 1 otherwise (red,
no answer, or no port to probe; never 2, which Docker's HEALTHCHECK reserves).

For Docker's HEALTHCHECK and Kubernetes exec probes, which judge a command by its exit code. The port
defaults to IMGWORKER_METRICS_PORT, so inside a container ``imgworker health`` needs no arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser(
        "health", help=summary, description=__doc__
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="full URL to probe, e.g. http://10.0.0.5:9730/readyz")
    where.add_argument("--port", type=int, help="local metrics port [IMGWORKER_METRICS_PORT]")
    p.add_argument("--ready", action="store_true", help="probe /readyz instead of /healthz")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=main)


def probe_url(args: argparse.Namespace) -> str | None:
    if args.url:
        return str(args.url)
    try:
        port = args.port or int(os.environ.get("IMGWORKER_METRICS_PORT", "0") or 0)
    except ValueError:
        return None
    if not port:
        return None
    return f"http://127.0.0.1:{port}/{'readyz' if args.ready else 'healthz'}"


def main(args: argparse.Namespace) -> int:
    url = probe_url(args)
    if url is None:
        # Unhealthy, not a usage error: Docker reserves exit 2, and a probe without a port cannot pass.
        print("imgworker health: give --port or --url (or set IMGWORKER_METRICS_PORT to a port number)",
              file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            code, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 503: the server answered "unhealthy"
        code, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        code, body = 0, f"no answer: {exc}".encode()
    if not args.quiet:
        print(f"{url}: {code or '-'} {body.decode(errors='replace').strip()}")
    return 0 if code == 200 else 1
