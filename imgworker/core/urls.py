"""Two rules every URL of a job is held to, in one place: no control characters, no credentials.

The worker's logs escape the same characters the contract refuses (worker/runner.py ``printable``); results,
logs and errors cut the same credentials the contract refuses (errors.redact_url, contract.check_url).
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: a log line or a path must not hold them
# ("\n" forges log lines; urlsplit silently drops "\t" and "\n", so the object written would differ from
# the one reported).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def split_credentials(url: str) -> tuple[str, str] | None:
    """``(scheme, rest after the credentials)`` when ``url`` carries a user:password part, else None.

    A user:password part has a colon or an "@" before any slash ("file:///a@2x.png" and "s3://b/k@2x.png" are
    left alone): "s3://KEY:SECRET@b/k", "s3://SECRET@b/k", and a secret with a slash, "s3://KEY:ab/cd@b/k".
    The password may hold "@" too: everything up to the last "@" is credentials.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        authority = rest.split("/", 1)[0]
        if "@" in authority or ":" in authority:
            return scheme, rest.rsplit("@", 1)[1]
    return None
