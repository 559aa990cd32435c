"""Command line: parses arguments and hands over to the library; holds no logic of its own.

Exit codes (docs/cli.md): 0 success, 1 runtime failure, 2 usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from sandtrap import __version__
from sandtrap.config import Config, dump_config, load_config
from sandtrap.errors import ConfigError, SandTrapError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


def main() -> None:
    """Console-script entry point."""
    cli()
