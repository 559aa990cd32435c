"""The `hpfeeds` output: Cowrie's `cowrie.sessions` summary of each session, to an hpfeeds broker.

`SessionSummaries` (pure) folds Cowrie records (outputs/cowrie.py) into the per-session JSON that
Cowrie's hpfeeds3 plugin publishes at `cowrie.session.closed` (peer and host address, start and
end, credentials tried, the login, commands, URLs, file hashes, client version); at most
`MAX_OPEN` sessions are followed. `HpfeedsSink` owns one broker connection speaking the hpfeeds
wire protocol (the `hpfeeds` package's framing): INFO, AUTH, then PUBLISH per summary. hpfeeds
has no acknowledgement: a summary counts as delivered once written and drained without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import OrderedDict
from typing import Any

from sandtrap.config import HpfeedsOutput
from sandtrap.events.base import to_record
from sandtrap.outputconfig import split_address
from sandtrap.outputs.base import Alert, Item, OutputError, Record
from sandtrap.outputs.cowrie import CowrieMapper

MAX_OPEN = 100_000


class SessionSummaries:
    """Cowrie records in, one summary out per closed session."""

    def __init__(self) -> None:
        self._open: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, record: Record) -> Record | None:
        session, eventid = record.get("session"), record.get("eventid")
        if not isinstance(session, str):
            return None
        if eventid == "cowrie.session.connect":
            self._open[session] = {
                "session": session,
                "startTime": record.get("timestamp"),
                "endTime": "",
                "peerIP": record.get("src_ip"),
                "peerPort": record.get("src_port"),
                "hostIP": record.get("dst_ip"),
                "hostPort": record.get("dst_port"),
                "loggedin": None,
                "credentials": [],
                "commands": [],
                "unknownCommands": [],
                "urls": [],
                "version": None,
                "ttylog": None,
                "hashes": [],
                "protocol": record.get("protocol"),
            }
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)
            return None
        meta = self._open.get(session)
        if meta is None:
            return None
        if eventid == "cowrie.login.success":
            meta["loggedin"] = [record.get("username"), record.get("password")]
        elif eventid == "cowrie.login.failed":
            meta["credentials"].append([record.get("username"), record.get("password")])
        elif eventid == "cowrie.command.input":
            meta["commands"].append(record.get("input"))
        elif eventid in ("cowrie.session.file_download", "cowrie.session.file_upload"):
            if record.get("url"):
                meta["urls"].append(record["url"])
            if record.get("shasum") and record["shasum"] not in meta["hashes"]:
                meta["hashes"].append(record["shasum"])
        elif eventid == "cowrie.client.version":
            meta["version"] = record.get("version")
        elif eventid == "cowrie.session.closed":
            del self._open[session]
            meta["endTime"] = record.get("timestamp")
            return meta
        return None


class HpfeedsSink:
    """Publishes session summaries to one channel of a broker."""

    batch_max_events = 50
    batch_max_seconds = 0.0

    def __init__(self, config: HpfeedsOutput, sensor: str, mapper: CowrieMapper) -> None:
        self.config = config
        self.sensor = sensor
        self.mapper = mapper
        self.timeout_seconds = config.timeout_seconds
        self.summaries = SessionSummaries()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def format(self, item: Item) -> list[Record]:
        if isinstance(item, Alert):
            return []
        out = []
        for record in self.mapper.map(to_record(item, self.sensor)):
            summary = self.summaries.add(record)
            if summary is not None:
                out.append(summary)
        return out

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        from hpfeeds import protocol

        host, port = split_address(self.config.address)
        context = ssl.create_default_context() if self.config.tls else None
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        unpacker = protocol.Unpacker()
        while True:
            data = await reader.read(4096)
            if not data:
                raise OutputError("hpfeeds: the broker closed before INFO")
            unpacker.feed(data)
            message = next(iter(unpacker), None)
            if message is not None:
                break
        opcode, body = message
        if opcode != protocol.OP_INFO:
            raise OutputError(f"hpfeeds: expected INFO, got opcode {opcode}")
        _name, rand = protocol.readinfo(body)
        writer.write(protocol.msgauth(rand, self.config.ident, self.config.secret))
        await writer.drain()
        self._reader, self._writer = reader, writer
        return reader, writer

    async def send(self, records: list[Record]) -> None:
        from hpfeeds import protocol

        try:
            if self._writer is None or self._reader is None:
                reader, writer = await self._connect()
            else:
                reader, writer = self._reader, self._writer
            for record in records:
                payload = json.dumps(record, ensure_ascii=True).encode("ascii")
                writer.write(protocol.msgpublish(self.config.ident, self.config.channel, payload))
            await writer.drain()
            # The broker answers a refused AUTH or PUBLISH with ERROR and closes: look once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    data = await reader.read(4096)
                    raise OutputError(
                        "hpfeeds: the broker refused (check ident, secret and pubchans)"
                        if data
                        else "hpfeeds: the broker closed the connection"
                    )
        except (OSError, OutputError) as exc:
            await self.close()
            raise OutputError(str(exc)) from None

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer, self._reader = self._writer, None, None
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


__all__ = ["MAX_OPEN", "HpfeedsSink", "SessionSummaries"]
