"""The `webhook` output: batches of records POSTed as JSON (or a chat preset's body).

Owns one aiohttp client session. A 2xx answer delivers the batch; 408, 429 and 5xx, a timeout or
a connection error are failures the runner retries (and spools); any other status refuses the
batch for good (counted as dropped, logged). Header values (tokens) are never logged.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from sandtrap.config import WebhookOutput
from sandtrap.outputs.base import Alert, Item, OutputError, OutputRejected, Record, sandtrap_record
from sandtrap.outputs.cowrie import CowrieMapper
from sandtrap.outputs.presets import body

_RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookSink:
    """POSTs batches to one URL."""

    def __init__(self, config: WebhookOutput, sensor: str, mapper: CowrieMapper | None) -> None:
        self.config = config
        self.sensor = sensor
        self.mapper = mapper
        self.batch_max_events = config.batch_max_events
        self.batch_max_seconds = config.batch_max_seconds
        self.timeout_seconds = config.timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        # The URL may carry a token (Telegram's bot URL): log its scheme and host only.
        url = URL(config.url)
        self._where = f"{url.scheme}://{url.host}:{url.port}"

    def format(self, item: Item) -> list[Record]:
        record = sandtrap_record(item, self.sensor)
        if self.mapper is not None and not isinstance(item, Alert):
            return self.mapper.map(record)
        return [record]

    async def send(self, records: list[Record]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "SandTrap", **self.config.headers},
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            )
        payload = body(self.config.preset, records, sensor=self.sensor, chat_id=self.config.chat_id)
        try:
            async with self._session.post(self.config.url, json=payload) as answer:
                status = answer.status
                await answer.read()
        except aiohttp.ClientError as exc:
            raise OutputError(f"webhook {self._where}: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return
        if status >= 500 or status in _RETRY_STATUSES:
            raise OutputError(f"webhook {self._where}: HTTP {status}")
        raise OutputRejected(f"webhook {self._where}: HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


__all__ = ["WebhookSink"]
