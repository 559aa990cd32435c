"""The `syslog` output: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) or a Unix socket.

`format_message` builds one message from a record (pure): PRI from the facility and a severity
per eventid, the record's own timestamp, the sensor as HOSTNAME, the eventid as MSGID, no
structured data, and the record as JSON (ASCII) for MSG, its longest strings cut until it fits
`max_message_bytes`. `SyslogSink` owns the socket: opened on first send, dropped on error and
opened again on the next (the runner retries and spools).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import socket
from typing import Any

from sandtrap.config import SyslogOutput
from sandtrap.outputconfig import FACILITIES, split_address
from sandtrap.outputs.base import Alert, Item, OutputError, Record, sandtrap_record
from sandtrap.outputs.cowrie import CowrieMapper

SEVERITIES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
# Events operators want to see above the noise; everything else is informational.
EVENT_SEVERITY = {
    "auth.success": "notice",
    "sandbox.artifact": "notice",
    "sandbox.error": "err",
    "sandbox.died": "warning",
    "gate.refused": "warning",
}
_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
TRUNCATED = "[...truncated]"


def _header_field(value: Any, limit: int) -> str:
    """A header field (RFC 5424 section 6.2): printable ASCII without spaces, or NILVALUE."""
    text = _PRINTUSASCII.sub("_", str(value or ""))[:limit]
    return text or "-"


def _fit(record: Record, limit: int) -> str:
    """The record as JSON of at most `limit` bytes: its longest strings are cut first."""
    text = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
    work = record
    while len(text) > limit:
        if work is record:
            work = json.loads(text)
        path = _longest_string(work)
        if path is None:
            return text[:limit]
        holder, key, value = path
        keep = max(0, min(len(value) // 2, len(value) - (len(text) - limit)) - len(TRUNCATED))
        holder[key] = value[:keep] + TRUNCATED
        text = json.dumps(work, ensure_ascii=True, separators=(",", ":"))
    return text


def _longest_string(value: Any) -> tuple[Any, Any, str] | None:
    best: tuple[Any, Any, str] | None = None
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            if isinstance(item, str) and len(item) > len(TRUNCATED) * 2:
                if best is None or len(item) > len(best[2]):
                    best = (node, key, item)
            elif isinstance(item, dict | list):
                stack.append(item)
    return best


def format_message(
    record: Record,
    *,
    facility: str,
    severity: str,
    hostname: str,
    app_name: str,
    procid: int | None,
    max_bytes: int,
) -> bytes:
    """One RFC 5424 message (without transport framing)."""
    pri = FACILITIES[facility] * 8 + SEVERITIES[severity]
    header = " ".join(
        (
            f"<{pri}>1",
            _header_field(record.get("timestamp"), 64),
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            _header_field(record.get("eventid"), 32),
            "-",
        )
    )
    body = _fit(record, max(64, max_bytes - len(header) - 1))
    return f"{header} {body}".encode("ascii")


def frame(message: bytes, framing: str) -> bytes:
    """RFC 6587 framing for stream transports: octet counting, or a trailing LF."""
    if framing == "lf":
        return message.replace(b"\n", b" ") + b"\n"
    return str(len(message)).encode("ascii") + b" " + message


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None

    def error_received(self, exc: Exception) -> None:
        self.error = exc


class SyslogSink:
    """Sends records as syslog messages; one socket, reopened after an error."""

    batch_max_events = 200
    batch_max_seconds = 0.0

    def __init__(self, config: SyslogOutput, sensor: str, mapper: CowrieMapper | None) -> None:
        self.config = config
        self.sensor = sensor
        self.mapper = mapper
        self.timeout_seconds = config.timeout_seconds
        self._procid = os.getpid()
        self._datagram: asyncio.DatagramTransport | None = None
        self._protocol: _Datagrams | None = None
        self._writer: asyncio.StreamWriter | None = None

    def format(self, item: Item) -> list[Record]:
        if isinstance(item, Alert):
            record = sandtrap_record(item, self.sensor)
            record["_severity"] = item.severity
            return [record]
        record = sandtrap_record(item, self.sensor)
        severity = EVENT_SEVERITY.get(item.eventid, "info")
        records = self.mapper.map(record) if self.mapper is not None else [record]
        for out in records:
            out["_severity"] = severity
        return records

    def _message(self, record: Record) -> bytes:
        record = dict(record)
        severity = record.pop("_severity", "info")
        return format_message(
            record,
            facility=self.config.facility,
            severity=severity if severity in SEVERITIES else "info",
            hostname=self.sensor,
            app_name=self.config.app_name,
            procid=self._procid,
            max_bytes=self.config.max_message_bytes,
        )

    async def send(self, records: list[Record]) -> None:
        messages = [self._message(record) for record in records]
        try:
            datagrams = self.config.transport == "udp" or (
                self.config.transport == "unix" and self._writer is None
            )
            if datagrams and await self._send_datagrams(messages):
                return
            await self._send_stream(messages)
        except OSError as exc:
            await self.close()
            raise OutputError(f"syslog {self.config.address}: {exc}") from None

    async def _send_datagrams(self, messages: list[bytes]) -> bool:
        """Send over a datagram socket; False when a unix socket turns out to be a stream."""
        if self._datagram is None:
            loop = asyncio.get_running_loop()
            if self.config.transport == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    sock.connect(self.config.address)
                except OSError as exc:
                    sock.close()
                    if exc.errno == errno.EPROTOTYPE:
                        return False
                    raise
                transport, protocol = await loop.create_datagram_endpoint(_Datagrams, sock=sock)
            else:
                host, port = split_address(self.config.address)
                transport, protocol = await loop.create_datagram_endpoint(
                    _Datagrams, remote_addr=(host, port)
                )
            self._datagram, self._protocol = transport, protocol
        watcher = self._protocol
        if watcher is not None and watcher.error is not None:
            error, watcher.error = watcher.error, None
            raise OSError(f"earlier datagram failed: {error}")
        for message in messages:
            self._datagram.sendto(message)
        return True

    async def _send_stream(self, messages: list[bytes]) -> None:
        if self._writer is None:
            if self.config.transport == "unix":
                _, self._writer = await asyncio.open_unix_connection(self.config.address)
            else:
                host, port = split_address(self.config.address)
                _, self._writer = await asyncio.open_connection(host, port)
        self._writer.write(b"".join(frame(m, self.config.framing) for m in messages))
        await self._writer.drain()

    async def close(self) -> None:
        if self._datagram is not None:
            self._datagram.close()
            self._datagram = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


__all__ = ["EVENT_SEVERITY", "SEVERITIES", "SyslogSink", "format_message", "frame"]
