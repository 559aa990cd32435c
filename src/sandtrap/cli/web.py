"""`sandtrap web`: the analyst's read-only console in the browser.

Command line only: the console is sandtrap.web's (server.py chooses and checks the address).
"""

from __future__ import annotations

from pathlib import Path

import click

from sandtrap.cli._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    config_option,
    configure_logging,
    fail,
    load,
)
from sandtrap.errors import ConfigError


@click.command()
@config_option
@click.option(
    "--listen",
    default=None,
    metavar="ADDR:PORT",
    help="Address to serve (default: web.listen, 127.0.0.1:8080); off loopback needs web.token.",
)
def web(config_path: Path | None, listen: str | None) -> None:
    """Serve the web console: overview, sessions with replay, artifacts (read only)."""
    from sandtrap.web.server import run

    config = load(config_path)
    configure_logging(config)
    try:
        run(config, listen)
    except ConfigError as exc:
        for line in exc.problems:
            fail(f"sandtrap: {line}")
        raise SystemExit(EXIT_USAGE) from None
    except OSError as exc:
        fail(f"sandtrap: cannot serve the console: {exc}")
        raise SystemExit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        pass
