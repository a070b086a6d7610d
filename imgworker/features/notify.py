"""Completion notifications: a job's optional ``notify`` names a Gearman function that receives the result.

When a job finishes (success or failure) the worker submits the result JSON, plus ``function``, ``src``,
``dst`` and ``id`` of the job, as a *background* job to that function, so a PHP app learns its background thumbnail is
ready without polling. Delivery is best effort and never changes the job's own result.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from imgworker.core.contract import Payload
from imgworker.core.errors import redact_url
from imgworker.gearman import Client, GearmanError

log = logging.getLogger("imgworker.features.notify")

SUBMIT_TIMEOUT_S = 5.0
MAX_NAME = 255


def target(payload: Payload) -> dict[str, Any] | None:
    """The job's ``notify`` function and its src/dst, from the payload decoded once (even one that failed)."""
    obj = payload.fields
    name = obj.get("notify")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or any(c.isspace() or c == "\0" for c in name):
        return None
    job_id = obj.get("id")  # any scalar: the notification carries it as text
    src, dst = obj.get("src"), obj.get("dst")
    return {"notify": name, "src": redact_url(src) if isinstance(src, str) else src,
            "dst": redact_url(dst) if isinstance(dst, str) else dst,
            "id": None if job_id is None else str(job_id)}


class Notifier:
    """One Gearman client per worker process, connected on first use."""

    def __init__(self, servers: Sequence[str]) -> None:
        self.servers = list(servers)
        self._client: Client | None = None

    async def send(self, payload: Payload, function: str, result: dict[str, Any]) -> bool:
        where = target(payload)
        if where is None:
            return False
        body = {**result, "function": function, "src": where["src"], "dst": result.get("dst", where["dst"])}
        if where["id"] is not None:  # a failed job's result has no id: the notification always does
            body.setdefault("id", where["id"])
        if self._client is None:
            self._client = Client(self.servers)
        try:
            data = json.dumps(body, separators=(",", ":")).encode()
            await asyncio.wait_for(self._client.submit_background(where["notify"], data), SUBMIT_TIMEOUT_S)
        except (GearmanError, OSError, TimeoutError) as exc:
            log.warning("notify %s failed: %s", where["notify"], exc)
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
