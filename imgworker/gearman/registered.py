"""Whether any worker is registered for a function, from the job servers' admin ``status``: the hint a client
gives when a job does not finish because nobody serves its function (a typo, or no worker started yet)."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence

from .admin import status


async def unserved_hint(servers: Sequence[str], function: str, *, timeout: float = 2.0) -> str | None:
    """``no worker registered for 'X' on HOST:PORT (did you mean 'Y'?)`` when every job server that answers has
    no worker for ``function``; None when one has, or when none answers (that is another error)."""
    answered: dict[str, int] = {}
    served: set[str] = set()
    for server in servers:
        try:
            functions = await status(server, timeout=timeout)
        except Exception:  # a server that does not answer tells nothing about the function
            continue
        answered[server] = sum(f.available_workers for f in functions if f.name == function)
        served |= {f.name for f in functions if f.available_workers > 0}
    if not answered or any(answered.values()):
        return None
    close = difflib.get_close_matches(function, sorted(served), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else " (no worker has registered for it yet)"
    return f"no worker registered for {function!r} on {', '.join(answered)}{hint}"


def unserved_hint_sync(servers: Sequence[str], function: str, *, timeout: float = 2.0) -> str | None:
    """unserved_hint for callers without an event loop (the blocking client, a timer thread)."""
    return asyncio.run(unserved_hint(servers, function, timeout=timeout))
