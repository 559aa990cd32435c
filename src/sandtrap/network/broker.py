"""Fetch-on-behalf, the front's side: the socket the sinkhole asks on, limits, artifacts, events.

The sinkhole (`sandbox.sinkhole.fetch.enabled`) relays a sandbox's HTTP GET here over a Unix
socket in a host directory mounted read-only into it. Everything it says is hostile (root in a
sandbox may run code in the sinkhole): one bounded JSON line is read, its source must be an address
of the sinkhole's subnet, and the URL goes through network/fetch.py's policy whatever the sinkhole
claims. Rates are bounded per sandbox and in all (`per_sandbox_per_minute`, `per_minute`) and so
is concurrency; requests over a rate are refused and counted, one `network.flood` (kind `fetch`)
per sandbox and interval. A fetched body is stored like every artifact (var/artifacts/<sha256>)
before it is served, and its `network.download` event names the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sandtrap.config import Config
from sandtrap.events import EventSink
from sandtrap.events.network import (
    NetworkDownload,
    NetworkEvent,
    NetworkFetchFailed,
    NetworkFlood,
)
from sandtrap.network.budget import Budget
from sandtrap.network.feed import Owner
from sandtrap.network.fetch import Fetched, FetchRefused, fetch
from sandtrap.paths import DataLayout
from sandtrap.sandbox.forensics import store_artifact
from sandtrap.sandbox.sinknet import FETCH_SOCKET, fetch_socket_dir

log = logging.getLogger(__name__)

MAX_REQUEST = 8 * 1024
E = TypeVar("E", bound=NetworkEvent)
REQUEST_TIMEOUT = 10.0


class FetchBroker:
    """Serves the sinkhole's fetch requests until cancelled (`run`)."""

    def __init__(
        self, config: Config, events: EventSink,
        owner: Callable[[str], Awaitable[Owner | None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._fetch = config.sandbox.sinkhole.fetch
        self._subnet = ipaddress.IPv4Network(config.sandbox.sinkhole.subnet)
        self._interval = config.sandbox.sinkhole.flood_report_interval_seconds
        self._events = events
        self._owner = owner
        self._clock = clock
        self._layout = DataLayout(config.storage.data_dir)
        self.directory = fetch_socket_dir(config.sandbox, config.storage.data_dir)
        per_sandbox = self._fetch.per_sandbox_per_minute
        self._per_sandbox = Budget(per_sandbox / 60.0, per_sandbox, self._interval)
        self._all = Budget(self._fetch.per_minute / 60.0, self._fetch.per_minute, self._interval)
        self._slots = asyncio.Semaphore(self._fetch.concurrent)
        self._dropped: dict[str, int] = {}
        self._dropped_since: dict[str, float] = {}
        self.fetched = 0
        self.refused = 0
        self.bad = 0

    @property
    def socket_path(self) -> Path:
        return self.directory / FETCH_SOCKET

    async def run(self) -> None:
        await asyncio.to_thread(self._prepare)
        server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=MAX_REQUEST
        )
        # The sinkhole's service runs as nobody (of its user namespace): anyone may connect;
        # what a connection may ask is bounded above, whoever asks.
        os.chmod(self.socket_path, 0o666)  # noqa: S103
        log.info("fetch-on-behalf: serving the sinkhole on %s", self.socket_path)
        try:
            async with server:
                while True:
                    await asyncio.sleep(1.0)
                    await self._report_floods()
        finally:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            await self._report_floods(flush=True)

    def _prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                src, url, user_agent = self._parse(line)
            except (ValueError, TimeoutError, asyncio.LimitOverrunError, OSError) as exc:
                self.bad += 1
                if self.bad <= 10 or self.bad % 1000 == 0:
                    log.warning("fetch-on-behalf: bad request from the sinkhole (%d so far): %s",
                                self.bad, exc)  # fmt: skip
                await self._refuse(writer)
                return
            await self._answer(writer, src, url, user_agent)
        except (OSError, ConnectionError):
            pass  # the sandbox's client (or the sinkhole) went away
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def _parse(self, line: bytes) -> tuple[str, str, str]:
        if not line.endswith(b"\n") or len(line) > MAX_REQUEST:
            raise ValueError("not one short line")
        ask = json.loads(line)
        if not isinstance(ask, dict):
            raise ValueError("not a JSON object")
        src, url, user_agent = ask.get("src"), ask.get("url"), ask.get("ua", "")
        if not all(isinstance(v, str) for v in (src, url, user_agent)):
            raise ValueError("src, url and ua must be strings")
        if ipaddress.IPv4Address(str(src)) not in self._subnet:
            raise ValueError(f"source {src!r} is not on the sinkhole's subnet")
        return str(src), str(url)[:2048], str(user_agent)[:1024]

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"status":0}\n')
        await writer.drain()

    async def _answer(
        self, writer: asyncio.StreamWriter, src: str, url: str, user_agent: str
    ) -> None:
        now = self._clock()
        if not self._per_sandbox.allow(src, "fetch", now) or not self._all.allow("*", "fetch", now):
            self.refused += 1
            self._dropped_since.setdefault(src, now)
            self._dropped[src] = self._dropped.get(src, 0) + 1
            await self._refuse(writer)
            return
        owner = await self._owner(src)
        async with self._slots:
            try:
                got = await fetch(url, user_agent, self._fetch)
            except FetchRefused as exc:
                self.refused += 1
                self._events.emit(_failed(owner, src, url, str(exc)))
                await self._refuse(writer)
                return
        digest, path = await asyncio.to_thread(store_artifact, self._layout.artifacts, got.body)
        self.fetched += 1
        self._events.emit(_download(owner, src, url, got, digest, path))
        head = {
            "status": got.status, "reason": got.reason, "type": got.content_type,
            "location": got.location, "size": len(got.body),
        }  # fmt: skip
        writer.write(json.dumps(head).encode() + b"\n")
        writer.write(got.body)
        await writer.drain()

    async def _report_floods(self, flush: bool = False) -> None:
        now = self._clock()
        for src in list(self._dropped):
            since = self._dropped_since[src]
            if flush or now - since >= self._interval:
                count = self._dropped.pop(src)
                del self._dropped_since[src]
                owner = await self._owner(src)
                flood = _event(NetworkFlood, owner, src, dst_ip="", dst_port=0, kind="fetch",
                               count=count, seconds=round(now - since, 1))  # fmt: skip
                self._events.emit(flood)
        if len(self._dropped) > 4096:  # a forged stream of sources: keep the report bounded
            log.warning("fetch-on-behalf: %d sources over their rate", len(self._dropped))
            self._dropped.clear()
            self._dropped_since.clear()


def _event(cls: type[E], owner: Owner | None, src: str, **fields: Any) -> E:
    return cls(
        session=owner.session if owner else None,
        src_ip=owner.src_ip if owner else None,
        container_id=owner.container_id if owner else None,
        sandbox_ip=src,
        **fields,
    )


def _failed(owner: Owner | None, src: str, url: str, reason: str) -> NetworkFetchFailed:
    return _event(NetworkFetchFailed, owner, src, dst_ip="", dst_port=0, url=url, reason=reason)


def _download(
    owner: Owner | None, src: str, url: str, got: Fetched, digest: str, path: Path
) -> NetworkDownload:
    return _event(
        NetworkDownload, owner, src, dst_ip=got.address, dst_port=got.port, url=url,
        status=got.status, content_type=got.content_type, size=len(got.body), sha256=digest,
        artifact=str(path),
    )  # fmt: skip
