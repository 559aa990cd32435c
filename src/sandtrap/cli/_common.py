"""What every command shares: exit codes, loading the configuration, --config, error reporting.

Turns library errors into one line on stderr and an exit code (docs/cli.md); decides nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sandtrap.config import Config, load_config
from sandtrap.errors import ConfigError, SandTrapError
from sandtrap.paths import DataLayout
from sandtrap.textsafe import safe_text

if TYPE_CHECKING:
    import sqlite3

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def fail(message: str) -> None:
    click.echo(message, err=True)


def load(path: Path | None) -> Config:
    """The configuration, or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            fail(line)
        raise SystemExit(EXIT_USAGE) from None


def layout(config: Config) -> DataLayout:
    return DataLayout(config.storage.data_dir)


def configure_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SANDTRAP_CONFIG",
    default=None,
    help="YAML configuration file (default: built-in defaults). Env: SANDTRAP_CONFIG.",
)


def engine_call(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine; a SandTrapError becomes one line on stderr and exit 1."""
    try:
        return asyncio.run(factory())
    except SandTrapError as exc:
        fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None


store_option = click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Read a PostgreSQL store shared by sensors (postgresql://...) instead of the local index.",
)


def open_index(config: Config, store: str | None = None) -> sqlite3.Connection:
    """The index of the configuration's data directory, built from the log when missing; or,
    with `store`, the PostgreSQL store's events of every sensor as an in-memory index."""
    from sandtrap.analysis.query import open_index

    if store is not None:
        return _store_index(store)
    paths = layout(config)
    return open_index(paths.index_db, paths.events_log)


def store_records(url: str, session: str) -> list[dict[str, Any]]:
    """One session's events from the PostgreSQL store (for `export --store`)."""
    import psycopg

    from sandtrap.store.postgres import session_records

    try:
        return session_records(url, session)
    except psycopg.Error as exc:
        fail(f"sandtrap: cannot read the store: {type(exc).__name__}: {safe_text(str(exc))}")
        raise SystemExit(EXIT_FAILURE) from None


def _store_index(url: str) -> sqlite3.Connection:
    if not url.startswith(("postgresql://", "postgres://")):
        fail("sandtrap: --store takes a postgresql:// URL")
        raise SystemExit(EXIT_USAGE)
    try:
        import psycopg

        from sandtrap.store.postgres import load_index
    except ImportError:
        fail("sandtrap: --store needs psycopg (pip install 'sandtrap[postgresql]')")
        raise SystemExit(EXIT_FAILURE) from None
    try:
        return load_index(url)
    except psycopg.Error as exc:
        # The URL may hold a password: name the error, never the URL.
        fail(f"sandtrap: cannot read the store: {type(exc).__name__}: {safe_text(str(exc))}")
        raise SystemExit(EXIT_FAILURE) from None


def query(call: Callable[[], T]) -> T:
    """Run an index query; a QueryError becomes one line on stderr and exit 1."""
    from sandtrap.analysis.query import QueryError

    try:
        return call()
    except QueryError as exc:
        fail(f"sandtrap: {safe_text(str(exc))}")
        raise SystemExit(EXIT_FAILURE) from None


def since_bound(value: str | None) -> str | None:
    """A --since value as an ISO time (None: no bound); a bad value exits 2."""
    from sandtrap.analysis.query import QueryError, parse_since

    try:
        return parse_since(value) if value else None
    except QueryError as exc:
        fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_USAGE) from None
