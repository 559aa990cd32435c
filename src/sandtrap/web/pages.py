"""The console's HTML pages: overview, sessions, one session, artifacts, one artifact.

Each factory takes the `Console` and returns the endpoint; the questions are analysis/'s, the
markup the templates'. Query parameters are parsed here into the query layer's types
(`session_filter`) and refused with a 400 page when they make no sense.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sandtrap.analysis import browse
from sandtrap.analysis import overview as ov
from sandtrap.analysis.query import QueryError, parse_since, resolve_session
from sandtrap.analysis.replay import find_casts
from sandtrap.web import charts, files, present
from sandtrap.web.app import Console

Endpoint = Callable[[Request], Awaitable[Response]]
_YES_NO = {"": None, "any": None, "yes": True, "no": False}
FEED_SIZE = 15
FILTER_KEYS = ("since", "until", "ip", "username", "commands", "artifacts", "network")


def session_filter(params: Mapping[str, str], per_page: int) -> browse.SessionFilter:
    """The sessions page's query string as a filter.

    Raises:
        QueryError: a bad time, flag or page number.
    """

    def flag(name: str) -> bool | None:
        value = params.get(name, "").strip().lower()
        if value not in _YES_NO:
            raise QueryError(f"{name} must be yes, no or any")
        return _YES_NO[value]

    def bound(name: str) -> str | None:
        value = params.get(name, "").strip()
        return parse_since(value) if value else None

    page_text = params.get("page", "1").strip() or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= 1_000_000:
        raise QueryError("page must be a number from 1")
    return browse.SessionFilter(
        since=bound("since"),
        until=bound("until"),
        ip=params.get("ip", "").strip() or None,
        username=params.get("username") or None,
        has_commands=flag("commands"),
        has_artifacts=flag("artifacts"),
        has_network=flag("network"),
        page=int(page_text),
        per_page=per_page,
    )


def period_name(request: Request) -> str:
    name = request.query_params.get("period", "24h")
    if name not in ov.PERIODS:
        raise QueryError(f"period must be one of {', '.join(ov.PERIODS)}")
    return name


def overview_data(db: sqlite3.Connection, name: str) -> dict[str, Any]:
    span = ov.period(name)
    last = ov.last_event_id(db)
    recent = ov.events_after(db, max(0, last - FEED_SIZE), FEED_SIZE)
    counts = ov.hourly(db, span)
    return {
        "recent": [present.live_item(item["id"], item["record"]) for item in reversed(recent)],
        "period": span,
        "cards": ov.cards(db, span),
        "timeline": ov.timeline(db, span, counts),
        "top": ov.top(db, span),
        "heatmap": ov.heatmap(db, span, counts),
        "last_event": last,
    }


async def cached_overview(console: Console, name: str) -> dict[str, Any]:
    return await console.overviews.get(
        name, lambda: console.reader.ask(lambda db: overview_data(db, name))
    )


def overview(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            name = period_name(request)
        except QueryError as exc:
            return console.problem(request, 400, str(exc))
        data = await cached_overview(console, name)
        tops = []
        for key, label, _column, _sql in ov.TOP_LISTS:
            rows = data["top"][key]
            peak = max((n for _, n in rows), default=0)
            tops.append((key, label, [(v, n, charts.bar_svg(n, peak)) for v, n in rows]))
        return console.page(
            request,
            "overview.html",
            periods=list(ov.PERIODS),
            timeline_svg=charts.timeline_svg(data["timeline"]),
            heatmap_svg=charts.heatmap_svg(data["heatmap"]),
            tops=tops,
            **data,
        )

    return endpoint


def sessions(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        params = request.query_params
        try:
            wanted = session_filter(params, console.config.web.page_size)
        except QueryError as exc:
            return console.problem(request, 400, str(exc))
        found = await console.reader.ask(lambda db: browse.find_sessions(db, wanted))
        kept = {key: params[key] for key in FILTER_KEYS if params.get(key)}
        return console.page(request, "sessions.html", found=found, form=kept)

    return endpoint


def session(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        prefix = request.path_params["session"]
        try:
            full = await console.reader.ask(lambda db: resolve_session(db, prefix))
        except QueryError as exc:
            return console.problem(request, 404, str(exc))
        if full != prefix:
            return RedirectResponse(f"/sessions/{full}", status_code=302)
        detail = await console.reader.ask(lambda db: browse.session_page(db, full))
        casts = {
            int(path.stem.rpartition("-")[2])
            for path in find_casts(console.layout.recordings, full)
        }
        return console.page(request, "session.html", d=detail, s=detail["session"], casts=casts)

    return endpoint


def artifacts(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        text = request.query_params.get("page", "1")
        page = int(text) if text.isdigit() and 0 < int(text) <= 1_000_000 else 1
        per_page = console.config.web.page_size
        found = await console.reader.ask(lambda db: browse.list_artifacts(db, page, per_page))
        return console.page(request, "artifacts.html", found=found)

    return endpoint


def artifact(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        detail = await console.artifact(request)
        if isinstance(detail, Response):
            return detail
        stored = await files.describe(console.layout.artifact(detail["sha256"]))
        return console.page(request, "artifact.html", a=detail, stored=stored)

    return endpoint
