"""The console's JSON at /api/... (the data behind each page, for scripts), the casts the player
loads, artifact downloads and the export bundle.

Casts are served as data (`application/x-asciicast`, never HTML); files as attachments of type
`application/octet-stream`; every header is the guard's. The bundle is built without the engine
(events, casts and the artifact store: analysis/export.py's fallback), one at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from sandtrap.analysis import browse
from sandtrap.analysis.export import collect, write_bundle
from sandtrap.analysis.query import QueryError, resolve_session
from sandtrap.analysis.replay import find_casts
from sandtrap.web.app import Console
from sandtrap.web.pages import Endpoint, cached_overview, period_name, session_filter

CAST_TYPE = "application/x-asciicast"


def _json(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(value, status_code=status)


def overview(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            name = period_name(request)
        except QueryError as exc:
            return console.problem(request, 400, str(exc))
        data = await cached_overview(console, name)
        return _json(
            {
                "period": dataclasses.asdict(data["period"]),
                "cards": [
                    {**dataclasses.asdict(card), "change_percent": card.change_percent}
                    for card in data["cards"]
                ],
                "timeline": [
                    {"start": b.start.isoformat(), "connections": b.connections, "logins": b.logins}
                    for b in data["timeline"]
                ],
                "top": {key: [list(row) for row in rows] for key, rows in data["top"].items()},
                "heatmap": data["heatmap"],
                "last_event": data["last_event"],
                "recent": data["recent"],
            }
        )

    return endpoint


def sessions(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            wanted = session_filter(request.query_params, console.config.web.page_size)
        except QueryError as exc:
            return console.problem(request, 400, str(exc))
        found = await console.reader.ask(lambda db: browse.find_sessions(db, wanted))
        return _json(
            {
                "page": found.page,
                "per_page": found.per_page,
                "has_next": found.has_next,
                "sessions": found.rows,
            }
        )

    return endpoint


def session(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        prefix = request.path_params["session"]
        try:
            detail = await console.reader.ask(
                lambda db: browse.session_page(db, resolve_session(db, prefix))
            )
        except QueryError as exc:
            return console.problem(request, 404, str(exc))
        return _json(detail)

    return endpoint


def cast(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        prefix, channel = request.path_params["session"], request.path_params["channel"]
        try:
            full = await console.reader.ask(lambda db: resolve_session(db, prefix))
        except QueryError as exc:
            return console.problem(request, 404, str(exc))
        # Our own file names (paths.cast_file), found by glob; no stored path is trusted.
        found = find_casts(console.layout.recordings, full, channel)
        if not found:
            return console.problem(request, 404, f"no recording of channel {channel}")
        return FileResponse(found[0], media_type=CAST_TYPE)

    return endpoint


def artifacts(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        text = request.query_params.get("page", "1")
        page = int(text) if text.isdigit() and 0 < int(text) <= 1_000_000 else 1
        per_page = console.config.web.page_size
        found = await console.reader.ask(lambda db: browse.list_artifacts(db, page, per_page))
        return _json({"page": found.page, "has_next": found.has_next, "artifacts": found.rows})

    return endpoint


def artifact(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        detail = await console.artifact(request)
        if isinstance(detail, Response):
            return detail
        stored = console.layout.artifact(detail["sha256"])
        detail["stored"] = stored.is_file()
        return _json(detail)

    return endpoint


def download(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        detail = await console.artifact(request)
        if isinstance(detail, Response):
            return detail
        stored = console.layout.artifact(detail["sha256"])
        if not stored.is_file():
            return console.problem(request, 404, "the stored copy is gone (retention)")
        return FileResponse(
            stored, media_type="application/octet-stream", filename=f"{detail['sha256']}.bin"
        )

    return endpoint


def _build_bundle(console: Console, full: str) -> Path:
    bundle = asyncio.run(collect(full, console.layout, None))
    handle, name = tempfile.mkstemp(prefix="sandtrap-export-", suffix=".tar.gz")
    os.close(handle)
    try:
        write_bundle(bundle, Path(name), console.config.sensor)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def export(console: Console) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        prefix = request.path_params["session"]
        try:
            full = await console.reader.ask(lambda db: resolve_session(db, prefix))
        except QueryError as exc:
            return console.problem(request, 404, str(exc))
        async with console.exports:
            path = await run_in_threadpool(_build_bundle, console, full)
        return FileResponse(
            path,
            media_type="application/gzip",
            filename=f"sandtrap-{full}.tar.gz",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    return endpoint
