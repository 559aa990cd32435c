"""`sandtrap verify-security` (attack a real sandbox from inside and print what held) and
`sandtrap verify-realism` (detection checks from inside).

Command line only: the attacks are sandtrap.verify's, the table sandtrap.analysis.render's.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click
from rich.console import Console

from sandtrap.cli._common import EXIT_FAILURE, config_option, engine_call, load


@click.command("verify-security")
@config_option
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
    from sandtrap.analysis.render import verify_table
    from sandtrap.verify.checks import has_failure
    from sandtrap.verify.runner import verify

    config = load(config_path)
    err = Console(stderr=True)
    rows = engine_call(
        lambda: verify(config, runtime=runtime, strict=strict, report=lambda line: err.log(line))
    )
    if as_json:
        for row in rows:
            click.echo(json.dumps(dataclasses.asdict(row)))
    else:
        # Wide enough for the table when piped (CI logs); a terminal's own width otherwise.
        Console(width=None if sys.stdout.isatty() else 140).print(verify_table(rows))
    if has_failure(rows):
        raise SystemExit(EXIT_FAILURE)


@click.command("verify-realism")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead of a table.")
def verify_realism(config_path: Path | None, as_json: bool) -> None:
    """Log in to a real sandbox and run container/honeypot detection checks from inside; exit 1
    when a tell SandTrap means to hide shows (see docs/fingerprinting.md)."""
    from sandtrap.analysis.render import verify_table
    from sandtrap.verify.checks import has_failure
    from sandtrap.verify.realism import known_tell
    from sandtrap.verify.realism_runner import verify_realism as run

    config = load(config_path)
    err = Console(stderr=True)
    rows = engine_call(lambda: run(config, report=lambda line: err.log(line)))
    if as_json:
        for row in rows:
            click.echo(json.dumps(dataclasses.asdict(row)))
    else:
        table = verify_table(rows, title="sandtrap verify-realism", who="checked by")
        Console(width=None if sys.stdout.isatty() else 160).print(table)
        click.echo(known_tell())
    if has_failure(rows):
        raise SystemExit(EXIT_FAILURE)
