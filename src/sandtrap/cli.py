"""Command line: parses arguments and hands over to the library; holds no logic of its own.

Exit codes (docs/cli.md): 0 success, 1 runtime failure, 2 usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from sandtrap import __version__
from sandtrap.config import Config, dump_config, load_config
from sandtrap.errors import ConfigError, SandTrapError
from sandtrap.textsafe import safe_text

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def _fail(message: str) -> None:
    click.echo(message, err=True)


def _load(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            _fail(line)
        raise SystemExit(EXIT_USAGE) from None


_config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SANDTRAP_CONFIG",
    default=None,
    help="YAML configuration file (default: built-in defaults). Env: SANDTRAP_CONFIG.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sandtrap")
def cli() -> None:
    """SandTrap: a high-interaction SSH honeypot with real shells in hardened containers."""


@cli.command()
@_config_option
def run(config_path: Path | None) -> None:
    """Start the honeypot and serve until SIGTERM or SIGINT."""
    from sandtrap.app import run_service

    config = _load(config_path)
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # asyncssh logs every channel at INFO, with attacker-chosen names unescaped; ours say what
    # matters with %r.
    logging.getLogger("asyncssh").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        code = run_service(config)
    except SandTrapError as exc:
        _fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    raise SystemExit(code)


@cli.group()
def config() -> None:
    """Check and show configuration."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_validate(file: Path) -> None:
    """Check FILE; print one line per problem and exit 2 when there is any."""
    _load(file)
    click.echo(f"{file}: OK")


@config.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def config_show(file: Path | None) -> None:
    """Print the effective configuration (FILE merged over defaults) as YAML."""
    click.echo(dump_config(_load(file)), nl=False)


@cli.group()
def image() -> None:
    """Build target images."""


@image.command("build")
@click.option("--target", default="debian", show_default=True, help="debian or ubuntu.")
@click.option("--base", default=None, help="Base image (default: offline debootstrap Debian 12).")
@click.option("--force", is_flag=True, help="Rebuild even when the inputs are unchanged.")
@click.option(
    "--context",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The containers/targets folder (default: found next to the source tree).",
)
@click.option("--mirror", default=None, help="Debian mirror for debootstrap.")
def image_build(
    target: str, base: str | None, force: bool, context: Path | None, mirror: str | None
) -> None:
    """Build the target image unless it is up to date (skipped when its inputs hash matches)."""
    from rich.markup import escape

    from sandtrap.sandbox.images import DEFAULT_MIRROR, build_target

    out = Console(stderr=True)
    try:
        with out.status(f"building target {escape(target)}") as status:

            def report(line: str) -> None:
                status.update(f"[bold]{escape(target)}[/]: {escape(line[:120])}")
                if line.startswith(("Step ", "debootstrap:", "docker ", "pulling ")):
                    out.log(escape(line))

            result = build_target(
                target,
                base=base,
                force=force,
                context=context,
                mirror=mirror or DEFAULT_MIRROR,
                report=report,
            )
    except SandTrapError as exc:
        _fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None
    click.echo(f"{result.tag}: {result.reason} (inputs {result.inputs_hash[:12]})")


@cli.group()
def sandboxes() -> None:
    """List and prune sandbox containers."""


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


@sandboxes.command("list")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def sandboxes_list(config_path: Path | None, as_json: bool) -> None:
    """Pool members and kept session sandboxes of this sensor, newest first."""
    from rich.table import Table
    from rich.text import Text

    from sandtrap.gate.child import engine_url
    from sandtrap.sandbox.docker import Engine
    from sandtrap.sandbox.inventory import list_sandboxes

    config = _load(config_path)

    async def fetch() -> list[Any]:
        engine = Engine(engine_url(config))
        try:
            return await list_sandboxes(engine, config.sensor)
        finally:
            await engine.close()

    rows = _engine_call(fetch)
    if as_json:
        for row in rows:
            record = dataclasses.asdict(row)
            record["created"] = row.created.isoformat() if row.created else None
            click.echo(json.dumps(record))
        return
    table = Table(title=f"sandboxes of sensor {safe_text(config.sensor)}")
    for column in ("container", "role", "session", "source IP", "hostname", "state", "age", "size"):
        # Identifiers are never cut (an analyst copies them); the rest folds on narrow terminals.
        table.add_column(column, no_wrap=column in ("container", "session"), overflow="fold")
    for row in rows:
        cells = (
            row.container_id[:12],
            row.role,
            row.session_id or "-",
            row.src_ip or "-",
            row.hostname,
            row.state,
            _age(row.created),
            _human_size(row.size_bytes),
        )
        # Text cells are never parsed as rich markup; safe_text escapes control characters.
        table.add_row(*(Text(safe_text(cell)) for cell in cells))
    Console().print(table)


@sandboxes.command("prune")
@_config_option
def sandboxes_prune(config_path: Path | None) -> None:
    """Apply the retention policy now: remove the oldest kept sandboxes past its limits."""
    from sandtrap.gate.child import engine_url
    from sandtrap.sandbox.docker import Engine
    from sandtrap.sandbox.retention import enforce_retention
    from sandtrap.store.jsonl import open_event_log

    config = _load(config_path)

    async def prune() -> list[str]:
        engine = Engine(engine_url(config))
        events = open_event_log(config.storage, config.sensor)
        try:
            return await enforce_retention(engine, config.retention, events, config.sensor)
        finally:
            events.close()
            await engine.close()

    removed = _engine_call(prune)
    click.echo(f"removed {len(removed)} sandbox(es)")
    for container_id in removed:
        click.echo(f"  {container_id[:12]}")


# --- analysis: the index, sessions, replay, export, stats (logic in sandtrap.analysis) -----------


def _paths(config: Config) -> tuple[Path, Path]:
    """(index database, event log) of a configuration."""
    from sandtrap.paths import DataLayout

    layout = DataLayout(config.storage.data_dir)
    return layout.index_db, layout.events_log


def _open_index(config: Config) -> Any:
    from sandtrap.analysis.query import open_index

    return open_index(*_paths(config))


def _query(call: Callable[[], T]) -> T:
    from sandtrap.analysis.query import QueryError

    try:
        return call()
    except QueryError as exc:
        _fail(f"sandtrap: {safe_text(str(exc))}")
        raise SystemExit(EXIT_FAILURE) from None


def _since(value: str | None) -> str | None:
    from sandtrap.analysis.query import QueryError, parse_since

    try:
        return parse_since(value) if value else None
    except QueryError as exc:
        _fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_USAGE) from None


@cli.group()
def index() -> None:
    """The SQLite index (var/sandtrap.db), derived from the event log."""


@index.command("rebuild")
@_config_option
def index_rebuild(config_path: Path | None) -> None:
    """Empty the index and fill it again from the event log and its rotated files."""
    from sandtrap.store.index import rebuild

    count = rebuild(*_paths(_load(config_path)))
    click.echo(f"indexed {count} event(s)")


@cli.group()
def sessions() -> None:
    """List and inspect recorded sessions."""


@sessions.command("list")
@_config_option
@click.option("--since", default=None, help="Only sessions since: 30m, 1h, 7d or an ISO time.")
@click.option("--ip", default=None, help="Only this source IP.")
@click.option("--user", default=None, help="Only this login name.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def sessions_list(
    config_path: Path | None,
    since: str | None,
    ip: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Sessions, newest first."""
    from sandtrap.analysis.query import list_sessions
    from sandtrap.analysis.render import print_view, sessions_table

    db = _open_index(_load(config_path))
    rows = list_sessions(db, _since(since), ip, user, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=True))
        return
    print_view(sessions_table(rows))


@sessions.command("show")
@_config_option
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def sessions_show(config_path: Path | None, session_id: str, as_json: bool) -> None:
    """Metadata, auth attempts, channels, commands, files changed and artifacts of a session."""
    from sandtrap.analysis.query import resolve_session, session_detail
    from sandtrap.analysis.render import print_view, session_view

    db = _open_index(_load(config_path))
    detail = _query(lambda: session_detail(db, resolve_session(db, session_id)))
    if as_json:
        click.echo(json.dumps(detail, ensure_ascii=True))
        return
    print_view(session_view(detail))


@cli.command()
@_config_option
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
    session_id: str,
    channel: int | None,
    speed: float,
    idle_limit: float | None,
) -> None:
    """Play a session's recordings in this terminal (raw, as the attacker saw them)."""
    from sandtrap.analysis.query import resolve_session
    from sandtrap.analysis.replay import find_casts, play, read_cast
    from sandtrap.paths import DataLayout

    config = _load(config_path)
    db = _open_index(config)
    session = _query(lambda: resolve_session(db, session_id))
    casts = find_casts(DataLayout(config.storage.data_dir).recordings, session, channel)
    if not casts:
        _fail(f"sandtrap: no recording of session {session}")
        raise SystemExit(EXIT_FAILURE)
    try:
        for path in casts:
            play(read_cast(path), sys.stdout.buffer, speed=speed, idle_limit=idle_limit)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except ValueError as exc:
        _fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None


@cli.command()
@_config_option
@click.argument("session_id")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle to write (.tar.gz).",
)
@click.option("--no-engine", is_flag=True, help="Do not read the kept container; use artifacts.")
def export(config_path: Path | None, session_id: str, output: Path, no_engine: bool) -> None:
    """Write a forensic bundle of a session: events, recordings, diff, files, sha256 manifest."""
    from sandtrap.analysis.export import collect, write_bundle
    from sandtrap.analysis.query import resolve_session
    from sandtrap.gate.child import engine_url
    from sandtrap.paths import DataLayout
    from sandtrap.sandbox.docker import Engine

    config = _load(config_path)
    db = _open_index(config)
    session = _query(lambda: resolve_session(db, session_id))

    async def gather() -> Any:
        engine = None if no_engine else Engine(engine_url(config))
        try:
            return await collect(session, DataLayout(config.storage.data_dir), engine)
        finally:
            if engine is not None:
                await engine.close()

    bundle = _engine_call(gather)
    manifest = write_bundle(bundle, output, config.sensor)
    click.echo(f"{output}: {len(manifest['members'])} member(s), {len(bundle.files)} file(s)")
    for note in bundle.notes:
        click.echo(f"note: {safe_text(note)}", err=True)


@cli.command()
@_config_option
@click.option("--since", default="24h", show_default=True, help="30m, 1h, 7d, an ISO time, or all.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def stats(config_path: Path | None, since: str, limit: int, as_json: bool) -> None:
    """Top usernames, passwords, source IPs and commands over a period."""
    from sandtrap.analysis.query import stats as compute
    from sandtrap.analysis.render import print_view, stats_view

    db = _open_index(_load(config_path))
    result = compute(db, None if since == "all" else _since(since), limit)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), ensure_ascii=True))
        return
    print_view(stats_view(result))


@cli.command("verify-security")
@_config_option
@click.option(
    "--runtime",
    type=click.Choice(["runc", "runsc"]),
    default=None,
    help="Sandbox runtime to verify (default: sandbox.runtime of the configuration).",
)
@click.option("--strict", is_flag=True, help="Runtime versions with known breakouts fail.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead of a table.")
def verify_security(
    config_path: Path | None, runtime: str | None, strict: bool, as_json: bool
) -> None:
    """Attack a real sandbox from inside; exit 1 when any check fails (see SECURITY.md)."""
    from rich.table import Table
    from rich.text import Text

    from sandtrap.verify.checks import has_failure
    from sandtrap.verify.runner import verify

    config = _load(config_path)
    err = Console(stderr=True)
    rows = _engine_call(
        lambda: verify(config, runtime=runtime, strict=strict, report=lambda line: err.log(line))
    )
    if as_json:
        for row in rows:
            click.echo(json.dumps(dataclasses.asdict(row)))
    else:
        table = Table(title="sandtrap verify-security")
        for column in ("check", "as", "expected", "observed", "result"):
            table.add_column(column, overflow="fold")
        colours = {"PASS": "green", "FAIL": "bold red", "WARN": "yellow", "INFO": "dim"}
        for row in rows:
            cells = [Text(safe_text(c)) for c in (row.check, row.who, row.expected, row.observed)]
            table.add_row(*cells, Text(row.status, style=colours[row.status]))
        # Wide enough for the table when piped (CI logs); a terminal's own width otherwise.
        Console(width=None if sys.stdout.isatty() else 140).print(table)
    if has_failure(rows):
        raise SystemExit(EXIT_FAILURE)


# --- deployment: the Engine API gate and health (logic in sandtrap.gate, sandtrap.health) -------


@cli.command()
@_config_option
@click.option(
    "--listen",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Unix socket to serve (default: sandbox.gate when a path, else var/run/gate.sock).",
)
@click.option("--upstream", default=None, help="Engine API endpoint (default: sandbox.docker_url).")
@click.option("--socket-group", type=int, default=None, help="Group id to give the socket (0660).")
@click.option("--lifeline", is_flag=True, hidden=True, help="Exit when stdin closes (child mode).")
@click.option("--config-from-env", is_flag=True, hidden=True, help="Config JSON in the env.")
def gate(
    config_path: Path | None,
    listen: Path | None,
    upstream: str | None,
    socket_group: int | None,
    lifeline: bool,
    config_from_env: bool,
) -> None:
    """Serve the Engine API gate: the only process that needs the Docker socket."""
    import os

    from sandtrap.config import parse_config
    from sandtrap.gate import gate_socket, serve_gate
    from sandtrap.gate.child import CONFIG_ENV

    if config_from_env:
        try:
            config = parse_config(json.loads(os.environ.get(CONFIG_ENV, "{}")), CONFIG_ENV)
        except (ValueError, ConfigError) as exc:
            _fail(f"sandtrap gate: bad {CONFIG_ENV}: {exc}")
            raise SystemExit(EXIT_USAGE) from None
    else:
        config = _load(config_path)
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    target = listen or gate_socket(config)
    _engine_call(
        lambda: serve_gate(
            config,
            target,
            upstream or config.sandbox.docker_url,
            socket_group=socket_group,
            lifeline=lifeline,
        )
    )


@cli.command()
@_config_option
@click.option(
    "--check",
    "checks",
    multiple=True,
    type=click.Choice(["listener", "engine", "pool"]),
    help="Only these checks (repeatable; default: all three).",
)
@click.option(
    "--knock",
    is_flag=True,
    help="Connect to the listener and read its banner (logged as a connection) instead of "
    "looking for the listening socket in /proc/net/tcp.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
def health(config_path: Path | None, checks: tuple[str, ...], knock: bool, as_json: bool) -> None:
    """Check the running service: SSH listener, engine (via the gate) and pool; exit 1 if not."""
    from sandtrap.health import run_checks

    config = _load(config_path)
    wanted = set(checks or ("listener", "engine", "pool"))
    results = _engine_call(lambda: run_checks(config, wanted, knock))
    for item in results:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(item)))
        else:
            click.echo(f"{'ok  ' if item.ok else 'FAIL'} {item.name}: {safe_text(item.detail)}")
    if not results or not all(item.ok for item in results):
        raise SystemExit(EXIT_FAILURE)


def _engine_call(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(factory())
    except SandTrapError as exc:
        _fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None


def main() -> None:
    """Console-script entry point."""
    cli()
