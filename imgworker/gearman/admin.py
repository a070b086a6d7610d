"""gearmand admin text protocol: `status`, `workers`, `version`, `maxqueue`."""

from __future__ import annotations

import asyncio

from .errors import ConnectionLost, GearmanTimeout, ProtocolError
from .protocol import FunctionStatus, WorkerInfo, parse_address, parse_status, parse_workers

# Commands whose reply is a list ended by a line holding a single '.'; the others reply with one line.
_MULTILINE = {"status", "workers"}
_MAX_REPLY = 16 * 1024 * 1024


async def admin_command(server: str, command: str, *, timeout: float = 5.0) -> str:
    """Send one admin command and return the reply text (without the final '.' line)."""
    if "\n" in command or "\r" in command:
        raise ValueError("admin command must be one line")
    host, port = parse_address(server)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(command.encode() + b"\n")
                multiline = command.split()[0] in _MULTILINE if command.split() else False
                lines: list[str] = []
                size = 0
                while True:
                    raw = await reader.readline()
                    if not raw:
                        raise ConnectionLost(f"{server}: connection closed during admin command")
                    size += len(raw)
                    if size > _MAX_REPLY:
                        raise ProtocolError("admin reply too large")
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if not multiline:
                        if line.startswith("ERR"):
                            raise ProtocolError(f"{server}: {command!r}: {line}")
                        return line
                    if line == ".":
                        return "\n".join(lines)
                    lines.append(line)
            finally:
                writer.close()
    except TimeoutError as e:
        raise GearmanTimeout(f"{server}: admin {command!r} timed out") from e


async def status(server: str, *, timeout: float = 5.0) -> list[FunctionStatus]:
    return parse_status(await admin_command(server, "status", timeout=timeout))


async def workers(server: str, *, timeout: float = 5.0) -> list[WorkerInfo]:
    return parse_workers(await admin_command(server, "workers", timeout=timeout))


async def version(server: str, *, timeout: float = 5.0) -> str:
    line = await admin_command(server, "version", timeout=timeout)
    return line[3:] if line.startswith("OK ") else line


async def maxqueue(server: str, function: str, size: int | None = None, *, timeout: float = 5.0) -> bool:
    cmd = f"maxqueue {function}" + (f" {size}" if size is not None else "")
    return (await admin_command(server, cmd, timeout=timeout)).strip() == "OK"
