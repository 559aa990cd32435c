"""`sandtrap index rebuild`, `sessions list|show`, `replay`, `export` and `stats`.

Command line only: queries are sandtrap.analysis.query's, tables sandtrap.analysis.render's,
playback sandtrap.analysis.replay's, bundles sandtrap.analysis.export's, the index sandtrap.store's.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sandtrap.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    config_option,
    engine_call,
    fail,
    layout,
    load,
    open_index,
    query,
    since_bound,
    store_option,
    store_records,
)
from sandtrap.textsafe import safe_text

if TYPE_CHECKING:
    from sandtrap.analysis.export import Bundle


@click.group()
def index() -> None:
    """The SQLite index (var/sandtrap.db), derived from the event log."""


@index.command("rebuild")
@config_option
def index_rebuild(config_path: Path | None) -> None:
    """Empty the index and fill it again from the event log and its rotated files."""
    from sandtrap.store.index import rebuild

    paths = layout(load(config_path))
    count = rebuild(paths.index_db, paths.events_log)
    click.echo(f"indexed {count} event(s)")


@click.group()
def sessions() -> None:
    """List and inspect recorded sessions."""


@sessions.command("list")
@config_option
@store_option
@click.option("--since", default=None, help="Only sessions since: 30m, 1h, 7d or an ISO time.")
@click.option("--ip", default=None, help="Only this source IP.")
@click.option("--user", default=None, help="Only this login name.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def sessions_list(
    config_path: Path | None,
    store: str | None,
    since: str | None,
    ip: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Sessions, newest first."""
    from sandtrap.analysis.query import list_sessions
    from sandtrap.analysis.render import print_view, sessions_table

    db = open_index(load(config_path), store)
    rows = list_sessions(db, since_bound(since), ip, user, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=True))
        return
    print_view(sessions_table(rows))


@sessions.command("show")
@config_option
@store_option
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def sessions_show(
    config_path: Path | None, store: str | None, session_id: str, as_json: bool
) -> None:
    """Metadata, auth attempts, channels, commands, files changed, artifacts and network events."""
    from sandtrap.analysis.query import resolve_session, session_detail
    from sandtrap.analysis.render import print_view, session_view

    db = open_index(load(config_path), store)
    detail = query(lambda: session_detail(db, resolve_session(db, session_id)))
    if as_json:
        click.echo(json.dumps(detail, ensure_ascii=True))
        return
    print_view(session_view(detail))


@click.command()
@config_option
@store_option
@click.argument("session_id")
@click.option("--channel", type=int, default=None, help="Only this channel (default: all).")
@click.option("--speed", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option(
    "--idle-limit",
    type=click.FloatRange(min=0),
    default=None,
    help="Longest pause in seconds (default: the cast's idle_time_limit, else 2).",
)
def replay(
    config_path: Path | None,
    store: str | None,
    session_id: str,
    channel: int | None,
    speed: float,
    idle_limit: float | None,
) -> None:
    """Play a session's recordings in this terminal (raw, as the attacker saw them)."""
    from sandtrap.analysis.query import resolve_session
    from sandtrap.analysis.replay import find_casts, play, read_cast

    config = load(config_path)
    db = open_index(config, store)
    session = query(lambda: resolve_session(db, session_id))
    casts = find_casts(layout(config).recordings, session, channel)
    if not casts:
        fail(f"sandtrap: no recording of session {session}")
        raise SystemExit(EXIT_FAILURE)
    try:
        for path in casts:
            play(read_cast(path), sys.stdout.buffer, speed=speed, idle_limit=idle_limit)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except ValueError as exc:
        fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None


@click.command()
@config_option
@store_option
@click.argument("session_id")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle to write (.tar.gz).",
)
@click.option("--no-engine", is_flag=True, help="Do not read the kept container; use artifacts.")
def export(
    config_path: Path | None, store: str | None, session_id: str, output: Path, no_engine: bool
) -> None:
    """Write a forensic bundle of a session: events, recordings, diff, files, sha256 manifest."""
    from sandtrap.analysis.export import collect, write_bundle
    from sandtrap.analysis.query import resolve_session
    from sandtrap.gate.child import engine_url
    from sandtrap.sandbox.docker import Engine

    config = load(config_path)
    db = open_index(config, store)
    session = query(lambda: resolve_session(db, session_id))
    records = store_records(store, session) if store is not None else None

    async def gather() -> Bundle:
        engine = None if no_engine else Engine(engine_url(config))
        try:
            return await collect(session, layout(config), engine, records)
        finally:
            if engine is not None:
                await engine.close()

    bundle = engine_call(gather)
    manifest = write_bundle(bundle, output, config.sensor)
    click.echo(f"{output}: {len(manifest['members'])} member(s), {len(bundle.files)} file(s)")
    for note in bundle.notes:
        click.echo(f"note: {safe_text(note)}", err=True)


@click.command()
@config_option
@store_option
@click.option("--since", default="24h", show_default=True, help="30m, 1h, 7d, an ISO time, or all.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def stats(
    config_path: Path | None, store: str | None, since: str, limit: int, as_json: bool
) -> None:
    """Top usernames, passwords, source IPs and commands over a period."""
    from sandtrap.analysis.query import stats as compute
    from sandtrap.analysis.render import print_view, stats_view

    db = open_index(load(config_path), store)
    result = compute(db, None if since == "all" else since_bound(since), limit)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), ensure_ascii=True))
        return
    print_view(stats_view(result))
