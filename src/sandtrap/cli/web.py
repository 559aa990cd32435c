"""`sandtrap web`: the analyst's read-only console in the browser.

Command line only: the console is sandtrap.web's (server.py chooses and checks the address).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from pydantic import ValidationError

from sandtrap.cli._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    config_option,
    configure_logging,
    fail,
    load,
)
from sandtrap.config import Config, WebConfig
from sandtrap.errors import ConfigError

TOKEN_ENV = "SANDTRAP_WEB_TOKEN"  # noqa: S105 - the variable's name, not a secret


def with_env_token(config: Config) -> Config:
    """`SANDTRAP_WEB_TOKEN`, when set, is `web.token` (a secret kept out of the YAML file).

    Raises:
        ConfigError: the token is too short or too long.
    """
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return config
    try:
        web = WebConfig.model_validate({**config.web.model_dump(), "token": token})
    except ValidationError as exc:
        reasons = "; ".join(str(err["msg"]) for err in exc.errors())
        raise ConfigError([f"{TOKEN_ENV}: {reasons}"]) from None
    return config.model_copy(update={"web": web})


@click.command()
@config_option
@click.option(
    "--listen",
    default=None,
    metavar="ADDR:PORT",
    help="Address to serve (default: web.listen, 127.0.0.1:8080); off loopback needs web.token"
    " (or SANDTRAP_WEB_TOKEN).",
)
def web(config_path: Path | None, listen: str | None) -> None:
    """Serve the web console: overview, sessions with replay, artifacts (read only)."""
    from sandtrap.web.server import run

    config = load(config_path)
    configure_logging(config)
    try:
        run(with_env_token(config), listen)
    except ConfigError as exc:
        for line in exc.problems:
            fail(f"sandtrap: {line}")
        raise SystemExit(EXIT_USAGE) from None
    except OSError as exc:
        fail(f"sandtrap: cannot serve the console: {exc}")
        raise SystemExit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        pass
