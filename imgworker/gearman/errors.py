"""Exceptions of the Gearman transport layer (standalone: no imports from the rest of imgworker)."""

from __future__ import annotations


class GearmanError(Exception):
    """Base class of every error raised by imgworker.gearman."""


class ProtocolError(GearmanError):
    """The peer sent bytes that are not a valid Gearman packet (bad magic, unknown type, oversized)."""


class ConnectionLost(GearmanError):
    """The server connection closed while a request was waiting on it."""


class NoServerAvailable(GearmanError):
    """No configured server accepted a connection."""


class GearmanTimeout(GearmanError):
    """A job or request did not finish within its timeout."""


class JobFailed(GearmanError):
    """The worker reported WORK_FAIL."""

    def __init__(self, handle: str) -> None:
        super().__init__(f"job {handle} failed (WORK_FAIL)")
        self.handle = handle


class JobError(GearmanError):
    """The worker reported WORK_EXCEPTION; ``text`` is the exception payload it sent."""

    def __init__(self, handle: str, text: str) -> None:
        super().__init__(f"job {handle} raised: {text}")
        self.handle = handle
        self.text = text
