"""Gearman binary packet codec and admin text-protocol parsing.

A packet is: 4-byte magic (\\0REQ or \\0RES), 4-byte big-endian type, 4-byte big-endian body size,
then the body: arguments separated by NUL; the last argument is opaque and may itself contain NULs.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import ProtocolError

REQ = b"\0REQ"
RES = b"\0RES"
HEADER_SIZE = 12
DEFAULT_MAX_PACKET = 64 * 1024 * 1024
DEFAULT_PORT = 4730

_HEADER = struct.Struct(">4sII")
# `fd address client_id : fn fn ...` (the address may be IPv6, so split on spaces, not colons)
_WORKER_LINE = re.compile(r"^(\d+) (\S+) (\S+) :(.*)$")


class PacketType(IntEnum):
    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


P = PacketType

# Argument count per type (as in libgearman's command table); the last argument takes the rest of the body.
ARGC: dict[int, int] = {
    P.CAN_DO: 1, P.CANT_DO: 1, P.RESET_ABILITIES: 0, P.PRE_SLEEP: 0, P.NOOP: 0,
    P.SUBMIT_JOB: 3, P.JOB_CREATED: 1, P.GRAB_JOB: 0, P.NO_JOB: 0, P.JOB_ASSIGN: 3,
    P.WORK_STATUS: 3, P.WORK_COMPLETE: 2, P.WORK_FAIL: 1, P.GET_STATUS: 1, P.ECHO_REQ: 1,
    P.ECHO_RES: 1, P.SUBMIT_JOB_BG: 3, P.ERROR: 2, P.STATUS_RES: 5, P.SUBMIT_JOB_HIGH: 3,
    P.SET_CLIENT_ID: 1, P.CAN_DO_TIMEOUT: 2, P.ALL_YOURS: 0, P.WORK_EXCEPTION: 2,
    P.OPTION_REQ: 1, P.OPTION_RES: 1, P.WORK_DATA: 2, P.WORK_WARNING: 2, P.GRAB_JOB_UNIQ: 0,
    P.JOB_ASSIGN_UNIQ: 4, P.SUBMIT_JOB_HIGH_BG: 3, P.SUBMIT_JOB_LOW: 3, P.SUBMIT_JOB_LOW_BG: 3,
    P.SUBMIT_JOB_SCHED: 8, P.SUBMIT_JOB_EPOCH: 4, P.SUBMIT_REDUCE_JOB: 4,
    P.SUBMIT_REDUCE_JOB_BACKGROUND: 4, P.GRAB_JOB_ALL: 0, P.JOB_ASSIGN_ALL: 5,
    P.GET_STATUS_UNIQUE: 1, P.STATUS_RES_UNIQUE: 6,
}


@dataclass(frozen=True, slots=True)
class Packet:
    magic: bytes
    type: int
    args: tuple[bytes, ...]


def encode(ptype: int, *args: bytes, magic: bytes = REQ) -> bytes:
    """Encode one packet. Arguments other than the last must not contain NUL."""
    body = b"\0".join(args)
    return _HEADER.pack(magic, ptype, len(body)) + body


def encode_header(ptype: int, size: int, magic: bytes = REQ) -> bytes:
    """Header alone: lets a caller send a big body without concatenating it (no extra copy)."""
    return _HEADER.pack(magic, ptype, size)


def parse_header(header: bytes, max_size: int = DEFAULT_MAX_PACKET) -> tuple[bytes, int, int]:
    """Validate a 12-byte header; return (magic, type, body size)."""
    magic, ptype, size = _HEADER.unpack(header)
    if magic != REQ and magic != RES:
        raise ProtocolError(f"bad magic {magic!r}")
    if ptype not in ARGC:
        raise ProtocolError(f"unknown packet type {ptype}")
    if size > max_size:
        raise ProtocolError(f"packet of {size} bytes exceeds the {max_size}-byte limit")
    return magic, ptype, size


def split_body(ptype: int, body: bytes) -> tuple[bytes, ...]:
    argc = ARGC[ptype]
    if argc == 0:
        if body:
            raise ProtocolError(f"packet type {ptype} takes no arguments, got {len(body)} bytes")
        return ()
    args = tuple(body.split(b"\0", argc - 1))
    if len(args) != argc:
        raise ProtocolError(f"packet type {ptype} needs {argc} arguments, got {len(args)}")
    return args


class Decoder:
    """Incremental decoder: feed() bytes, get complete packets. Buffers at most one frame (<= max_size)."""

    def __init__(self, max_size: int = DEFAULT_MAX_PACKET) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        out: list[Packet] = []
        buf = self._buf
        while len(buf) >= HEADER_SIZE:
            # The header is validated before waiting for the body, so a bogus size never grows the buffer.
            magic, ptype, size = parse_header(bytes(buf[:HEADER_SIZE]), self.max_size)
            end = HEADER_SIZE + size
            if len(buf) < end:
                break
            body = bytes(buf[HEADER_SIZE:end])
            del buf[:end]
            out.append(Packet(magic, ptype, split_body(ptype, body)))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


# --- admin text protocol -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    name: str
    queued: int
    running: int
    available_workers: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    fd: int
    address: str
    client_id: str
    functions: tuple[str, ...]


def parse_status(text: str) -> list[FunctionStatus]:
    """Parse the body of the admin `status` reply (lines `name\\tqueued\\trunning\\tworkers`)."""
    out = []
    for line in text.splitlines():
        if not line or line == ".":
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ProtocolError(f"bad status line {line!r}")
        out.append(FunctionStatus(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return out


def parse_workers(text: str) -> list[WorkerInfo]:
    """Parse the admin `workers` reply (lines `fd ip client_id : fn fn ...`)."""
    out = []
    for line in text.splitlines():
        if not line or line == ".":
            continue
        m = _WORKER_LINE.match(line)
        if m is None:
            raise ProtocolError(f"bad workers line {line!r}")
        out.append(WorkerInfo(int(m[1]), m[2], m[3], tuple(m[4].split())))
    return out


def parse_maxqueue(text: str) -> bool:
    """`maxqueue` replies `OK` on success."""
    return text.strip() == "OK"


def parse_version(text: str) -> str:
    line = text.strip()
    return line[3:] if line.startswith("OK ") else line


def parse_address(server: str) -> tuple[str, int]:
    """'host:port' -> (host, port); port defaults to 4730. Accepts '[v6]:port'."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = server.rpartition(":")
    if not sep:
        return server, DEFAULT_PORT
    return host, int(port)
