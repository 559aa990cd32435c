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

    from sandtrap.sandbox.docker import Engine
    from sandtrap.sandbox.inventory import list_sandboxes

    config = _load(config_path)

    async def fetch() -> list[Any]:
        engine = Engine(config.sandbox.docker_url)
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
    from sandtrap.sandbox.docker import Engine
    from sandtrap.sandbox.retention import enforce_retention
    from sandtrap.store.jsonl import EventLog

    config = _load(config_path)

    async def prune() -> list[str]:
        engine = Engine(config.sandbox.docker_url)
        events = EventLog(
            config.storage.data_dir / "log" / "events.jsonl",
            config.sensor,
            config.storage.log_max_bytes,
            config.storage.log_backups,
        )
        try:
            return await enforce_retention(engine, config.retention, events, config.sensor)
        finally:
            events.close()
            await engine.close()

    removed = _engine_call(prune)
    click.echo(f"removed {len(removed)} sandbox(es)")
    for container_id in removed:
        click.echo(f"  {container_id[:12]}")


def _engine_call(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(factory())
    except SandTrapError as exc:
        _fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None


def main() -> None:
    """Console-script entry point."""
    cli()
