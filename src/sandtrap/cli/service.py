"""`sandtrap run`, `config validate|show` and `image build`: the service and what it needs.

Command line only: the service is sandtrap.app's, configuration sandtrap.config's, images
sandtrap.sandbox.images'.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.console import Console

from sandtrap.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    config_option,
    configure_logging,
    fail,
    load,
)
from sandtrap.config import dump_config
from sandtrap.errors import SandTrapError


@click.command()
@config_option
def run(config_path: Path | None) -> None:
    """Start the honeypot and serve until SIGTERM or SIGINT."""
    from sandtrap.app import run_service

    config = load(config_path)
    configure_logging(config)
    # asyncssh logs every channel at INFO, with attacker-chosen names unescaped; ours say what
    # matters with %r.
    logging.getLogger("asyncssh").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        code = run_service(config)
    except SandTrapError as exc:
        fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    raise SystemExit(code)


@click.group()
def config() -> None:
    """Check and show configuration."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_validate(file: Path) -> None:
    """Check FILE; print one line per problem and exit 2 when there is any."""
    load(file)
    click.echo(f"{file}: OK")


@config.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def config_show(file: Path | None) -> None:
    """Print the effective configuration (FILE merged over defaults) as YAML."""
    click.echo(dump_config(load(file)), nl=False)


@click.group()
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
@click.option(
    "--tag", default=None, help="Image tag (default: the target's, e.g. sandtrap/target-debian:12)."
)
@click.option(
    "--sinkhole",
    "sinkhole_tag",
    default=None,
    help="Build the network sinkhole's image under this tag instead (sandbox.sinkhole.image, "
    "e.g. sandtrap/sinkhole:12) on the Debian base.",
)
def image_build(
    target: str,
    base: str | None,
    force: bool,
    context: Path | None,
    mirror: str | None,
    tag: str | None,
    sinkhole_tag: str | None,
) -> None:
    """Build the target image unless it is up to date (skipped when its inputs hash matches)."""
    from rich.markup import escape

    from sandtrap.sandbox.images import DEFAULT_MIRROR, build_target

    if sinkhole_tag is not None:
        from sandtrap.network.image import build_sinkhole

        try:
            done = build_sinkhole(sinkhole_tag, force=force)
        except SandTrapError as exc:
            fail(f"sandtrap: {exc}")
            raise SystemExit(EXIT_FAILURE) from None
        click.echo(f"{done.tag}: {done.reason} (inputs {done.inputs_hash[:12]})")
        return

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
                tag=tag,
            )
    except SandTrapError as exc:
        fail(f"sandtrap: {exc}")
        raise SystemExit(EXIT_FAILURE) from None
    click.echo(f"{result.tag}: {result.reason} (inputs {result.inputs_hash[:12]})")
