"""The console's ASGI application: `create_app(config)` wires the routes, the templates, the static
files and the guard; `Reader` runs index queries on worker threads over read-only connections.

Owns no SQL (analysis/ asks the questions) and no markup (templates/ and web/charts.py). It never
imports the engine: the console reads the index, the recordings and the artifact store only.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sandtrap import __version__
from sandtrap.analysis import browse
from sandtrap.analysis.query import QueryError, open_index
from sandtrap.config import Config
from sandtrap.paths import DataLayout
from sandtrap.web import present
from sandtrap.web.security import Guard

T = TypeVar("T")
STATIC = Path(__file__).parent / "static"


class Reader:
    """Index queries on worker threads, each on its own read-only connection (SQLite allows many
    readers beside the service's one writer in WAL mode)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._uri = "file:" + urllib.parse.quote(str(db_path.resolve())) + "?mode=ro"

    def prepare(self, log_path: Path) -> None:
        """Create the index (from the log) when missing, and its newer tables; then close it."""
        open_index(self.db_path, log_path).close()

    def run(self, question: Callable[[sqlite3.Connection], T]) -> T:
        db = sqlite3.connect(self._uri, uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return question(db)
        finally:
            db.close()

    async def ask(self, question: Callable[[sqlite3.Connection], T]) -> T:
        return await run_in_threadpool(self.run, question)


def templates() -> Environment:
    """Jinja2 with autoescape on for every template (attacker text is escaped by default)."""
    env = Environment(
        loader=PackageLoader("sandtrap.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=present.when,
        offset=present.offset,
        duration=present.duration,
        size=present.size,
        change=present.change,
        clip=present.clip,
        fields=present.fields,
        summary=present.summary,
    )
    env.globals["version"] = __version__
    return env


class Cache:
    """Answers kept for `seconds` per key, computed once however many requests wait for them."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._kept: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        async with self._locks.setdefault(key, asyncio.Lock()):
            kept = self._kept.get(key)
            if kept is not None and self.clock() - kept[0] < self.seconds:
                return cast(T, kept[1])
            value = await compute()
            self._kept[key] = (self.clock(), value)
            return value


class Console:
    """What every route needs: the config, the data layout, the reader and the templates."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.layout = DataLayout(config.storage.data_dir)
        self.reader = Reader(self.layout.index_db)
        self.env = templates()
        # Bundles are built one at a time (each reads the whole event log).
        self.exports = asyncio.Semaphore(1)
        self.overviews = Cache(config.web.cache_seconds)

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("sensor", self.config.sensor)
        context["path"] = request.url.path
        body = self.env.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status)

    async def artifact(self, request: Request) -> dict[str, Any] | Response:
        """The artifact the path's sha256 (or unique prefix) names, or the 404 to answer."""
        digest = request.path_params["sha256"]
        try:
            return await self.reader.ask(lambda db: browse.artifact_detail(db, digest))
        except QueryError as exc:
            return self.problem(request, 404, str(exc))

    def problem(self, request: Request, status: int, message: str) -> Response:
        """An error as JSON under /api/, else as a page."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return self.page(request, "error.html", status=status, status_code=status, message=message)


def create_app(config: Config) -> Starlette:
    """The console for `config`; the index is prepared (built from the log when missing) here."""
    from sandtrap.web import api, live, pages

    console = Console(config)
    console.reader.prepare(console.layout.events_log)
    feed = live.LiveFeed(console, config.web.live_interval_seconds, config.web.max_live_clients)
    routes = [
        Route("/", pages.overview(console)),
        Route("/sessions", pages.sessions(console)),
        Route("/sessions/{session}", pages.session(console)),
        Route("/sessions/{session}/export", api.export(console)),
        Route("/artifacts", pages.artifacts(console)),
        Route("/artifacts/{sha256}", pages.artifact(console)),
        Route("/api/overview", api.overview(console)),
        Route("/api/sessions", api.sessions(console)),
        Route("/api/sessions/{session}", api.session(console)),
        Route("/api/sessions/{session}/casts/{channel:int}", api.cast(console)),
        Route("/api/artifacts", api.artifacts(console)),
        Route("/api/artifacts/{sha256}", api.artifact(console)),
        Route("/api/artifacts/{sha256}/download", api.download(console)),
        Route("/api/live", feed.stream),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return console.problem(request, 404, "Not found.")

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Guard, token=config.web.token, allowed_hosts=config.web.allowed_hosts)
        ],
        exception_handlers={404: not_found},
    )
    app.state.console = console
    return app
