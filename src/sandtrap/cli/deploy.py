"""`sandtrap gate` and `sandtrap health`: running SandTrap privilege-separated and checking on it.

Command line only: the gate is sandtrap.gate's, the checks sandtrap.health's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import click

from sandtrap.cli._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    config_option,
    configure_logging,
    engine_call,
    fail,
    load,
)
from sandtrap.errors import ConfigError
from sandtrap.textsafe import safe_text


@click.command()
@config_option
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
    from sandtrap.config import parse_config
    from sandtrap.gate import gate_socket, serve_gate
    from sandtrap.gate.child import CONFIG_ENV

    if config_from_env:
        try:
            config = parse_config(json.loads(os.environ.get(CONFIG_ENV, "{}")), CONFIG_ENV)
        except (ValueError, ConfigError) as exc:
            fail(f"sandtrap gate: bad {CONFIG_ENV}: {exc}")
            raise SystemExit(EXIT_USAGE) from None
    else:
        config = load(config_path)
    configure_logging(config)
    target = listen or gate_socket(config)
    engine_call(
        lambda: serve_gate(
            config,
            target,
            upstream or config.sandbox.docker_url,
            socket_group=socket_group,
            lifeline=lifeline,
        )
    )


@click.command()
@config_option
@click.option(
    "--check",
    "checks",
    multiple=True,
    type=click.Choice(["listener", "engine", "pool", "metrics"]),
    help="Only these checks (repeatable; default: all four; metrics scrapes /metrics when "
    "metrics.listen is set).",
)
@click.option(
    "--knock",
    is_flag=True,
    help="Connect to the listener and read its banner (logged as a connection) instead of "
    "looking for the listening socket in /proc/net/tcp.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
def health(config_path: Path | None, checks: tuple[str, ...], knock: bool, as_json: bool) -> None:
    """Check the running service: listener, engine (via the gate), pool, metrics; exit 1 if not."""
    from sandtrap.health import run_checks

    config = load(config_path)
    wanted = set(checks or ("listener", "engine", "pool", "metrics"))
    results = engine_call(lambda: run_checks(config, wanted, knock))
    for item in results:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(item)))
        else:
            click.echo(f"{'ok  ' if item.ok else 'FAIL'} {item.name}: {safe_text(item.detail)}")
    if not results or not all(item.ok for item in results):
        raise SystemExit(EXIT_FAILURE)
