"""Gearman job protocol: asyncio worker and client, a blocking client wrapper, admin helpers.

Standalone transport layer: imports nothing from the rest of imgworker.
"""

from .admin import admin_command, maxqueue, status, version, workers
from .client import Client, JobStatus
from .errors import (
    ConnectionLost,
    GearmanError,
    GearmanTimeout,
    JobError,
    JobFailed,
    NoServerAvailable,
    ProtocolError,
)
from .protocol import DEFAULT_MAX_PACKET, FunctionStatus, Packet, PacketType, WorkerInfo
from .registered import unserved_hint, unserved_hint_sync
from .sync import SyncClient
from .worker import Job, Worker

__all__ = [
    "DEFAULT_MAX_PACKET",
    "Client",
    "ConnectionLost",
    "FunctionStatus",
    "GearmanError",
    "GearmanTimeout",
    "Job",
    "JobError",
    "JobFailed",
    "JobStatus",
    "NoServerAvailable",
    "Packet",
    "PacketType",
    "ProtocolError",
    "SyncClient",
    "Worker",
    "WorkerInfo",
    "admin_command",
    "maxqueue",
    "status",
    "unserved_hint",
    "unserved_hint_sync",
    "version",
    "workers",
]
