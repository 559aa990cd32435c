"""`sandtrap sandboxes list|prune`: this sensor's containers.

Command line only: listing is sandtrap.sandbox.inventory's, pruning sandtrap.sandbox.retention's,
the table sandtrap.analysis.render's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sandtrap.cli._common import config_option, engine_call, load

if TYPE_CHECKING:
    from sandtrap.sandbox.inventory import SandboxRow


@click.group()
def sandboxes() -> None:
    """List and prune sandbox containers."""


@sandboxes.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def sandboxes_list(config_path: Path | None, as_json: bool) -> None:
    """Pool members and kept session sandboxes of this sensor, newest first."""
    from rich.console import Console

    from sandtrap.analysis.render import sandbox_record, sandboxes_table
    from sandtrap.gate.child import engine_url
    from sandtrap.sandbox.docker import Engine
    from sandtrap.sandbox.inventory import list_sandboxes

    config = load(config_path)

    async def fetch() -> list[SandboxRow]:
        engine = Engine(engine_url(config))
        try:
            return await list_sandboxes(engine, config.sensor)
        finally:
            await engine.close()

    rows = engine_call(fetch)
    if as_json:
        for row in rows:
            click.echo(json.dumps(sandbox_record(row)))
        return
    Console().print(sandboxes_table(rows, config.sensor, datetime.now(UTC)))


@sandboxes.command("prune")
@config_option
def sandboxes_prune(config_path: Path | None) -> None:
    """Apply the retention policy now: remove the oldest kept sandboxes past its limits."""
    from sandtrap.gate.child import engine_url
    from sandtrap.sandbox.docker import Engine
    from sandtrap.sandbox.retention import enforce_retention
    from sandtrap.store.jsonl import open_event_log

    config = load(config_path)

    async def prune() -> list[str]:
        engine = Engine(engine_url(config))
        events = open_event_log(config.storage, config.sensor)
        try:
            return await enforce_retention(engine, config.retention, events, config.sensor)
        finally:
            events.close()
            await engine.close()

    removed = engine_call(prune)
    click.echo(f"removed {len(removed)} sandbox(es)")
    for container_id in removed:
        click.echo(f"  {container_id[:12]}")
