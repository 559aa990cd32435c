"""The overview's live feed: server-sent events carrying fresh stat cards and the newest events.

One stream per open overview, at most `max_clients` at once (more get 503). Each stream looks at
the index every `interval` seconds and sends only when something was indexed; a comment line
keeps idle connections open. A client that goes away ends its stream (Starlette cancels it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from sandtrap.analysis import overview as ov
from sandtrap.web.app import Console
from sandtrap.web.present import change, live_item

FEED_EVENTS = 20
KEEPALIVE_SECONDS = 15.0


def message(kind: str, data: Any) -> str:
    """One SSE message; JSON has no raw newlines, so `data:` is a single line."""
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=True)}\n\n"


def update(
    db: sqlite3.Connection,
    period: str,
    after: int,
    shared: dict[str, tuple[int, list[dict[str, Any]]]] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """The newest event id, and the update to send when events arrived after `after`.

    `shared` keeps the cards of each period at the newest event id, so that many open feeds
    count them once per change rather than once each.
    """
    newest = ov.last_event_id(db)
    if newest <= after:
        return newest, None
    recent = ov.events_after(db, max(after, newest - FEED_EVENTS), FEED_EVENTS)
    known = (shared or {}).get(period)
    if known is not None and known[0] == newest:
        cards = known[1]
    else:
        cards = [
            {"key": c.key, "value": c.value, "change": change(c.change_percent)}
            for c in ov.cards(db, ov.period(period))
        ]
        if shared is not None:
            shared[period] = (newest, cards)
    return newest, {
        "cards": cards,
        "events": [live_item(item["id"], item["record"]) for item in recent],
    }


class LiveFeed:
    def __init__(self, console: Console, interval: float, max_clients: int) -> None:
        self.console = console
        self.interval = interval
        self.max_clients = max_clients
        self.clients = 0
        self.shared: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    async def stream(self, request: Request) -> Response:
        period = request.query_params.get("period", "24h")
        if period not in ov.PERIODS:
            period = "24h"
        text = request.query_params.get("after", "")
        after = int(text) if text.isdigit() else None
        if self.clients >= self.max_clients:
            return PlainTextResponse("too many live feeds (web.max_live_clients)\n", 503)
        return StreamingResponse(
            self._messages(period, after),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _messages(self, period: str, after: int | None) -> AsyncIterator[str]:
        reader = self.console.reader
        # Counted while the generator runs: one cancelled before its first step never counts.
        self.clients += 1
        try:
            if after is None:
                after = await reader.ask(ov.last_event_id)
            yield "retry: 5000\n\n"
            yield message("hello", {"last": after})
            quiet = 0.0
            while True:
                newest, payload = await reader.ask(
                    functools.partial(update, period=period, after=after or 0, shared=self.shared)
                )
                if payload is not None:
                    after = newest
                    quiet = 0.0
                    yield message("update", payload)
                elif quiet >= KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(self.interval)
                quiet += self.interval
        finally:
            self.clients -= 1
