"""Command line: parses arguments and hands over to the library; holds no logic of its own.

`cli` is the click group (one module per command family under sandtrap/cli/), `main` the console
script. Exit codes (docs/cli.md): 0 success, 1 runtime failure, 2 usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import click

from sandtrap import __version__
from sandtrap.cli import analysis, deploy, sandboxes, service, threat, verify, web


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sandtrap")
def cli() -> None:
    """SandTrap: a high-interaction SSH honeypot with real shells in hardened containers."""


for _command in (
    service.run,
    service.config,
    service.image,
    sandboxes.sandboxes,
    analysis.index,
    analysis.sessions,
    analysis.replay,
    analysis.export,
    analysis.stats,
    verify.verify_security,
    verify.verify_realism,
    deploy.gate,
    deploy.health,
    web.web,
    threat.artifacts,
    threat.techniques,
    threat.clusters,
    threat.anomalies,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli()


__all__ = ["cli", "main"]
