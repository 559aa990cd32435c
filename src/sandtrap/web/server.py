"""`sandtrap web`: the console under uvicorn on one listen address.

Owns choosing the address (`--listen` over `web.listen`), refusing one that is not loopback when
no token is set, binding the socket (so a test can ask for port 0 and learn the port), and a
bounded shutdown (open live feeds are cut after `SHUTDOWN_GRACE_SECONDS`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn

from sandtrap.config import Config, is_loopback_host, parse_listen
from sandtrap.errors import ConfigError
from sandtrap.web.app import create_app

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_SECONDS = 3


def listen_address(config: Config, override: str | None) -> tuple[str, int]:
    """The address to serve on.

    Raises:
        ConfigError: unusable, or not loopback while `web.token` is unset.
    """
    text = override or config.web.listen
    try:
        host, port = parse_listen(text)
    except ValueError as exc:
        raise ConfigError([f"--listen: {exc}"]) from None
    if not is_loopback_host(host) and config.web.token is None:
        raise ConfigError(
            [f"--listen {text}: not a loopback address; set web.token to serve it (docs/web.md)"]
        )
    return host, port


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build_server(config: Config) -> uvicorn.Server:
    app = create_app(config)
    settings = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        lifespan="off",
    )
    return uvicorn.Server(settings)


async def serve(
    config: Config,
    sock: socket.socket,
    on_started: Callable[[uvicorn.Server], None] | None = None,
) -> None:
    """Serve on `sock` until the server is told to exit (SIGINT/SIGTERM, or `should_exit`)."""
    server = build_server(config)
    if on_started is not None:
        on_started(server)
    host, port = sock.getsockname()[:2]
    log.info("web console on http://%s:%d/ (sensor %s)", host, port, config.sensor)
    await server.serve(sockets=[sock])


def run(config: Config, listen: str | None) -> None:
    """`sandtrap web`: blocks until interrupted."""
    host, port = listen_address(config, listen)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"SandTrap console: http://{shown}:{sock.getsockname()[1]}/", flush=True)
    print(f"reading {config.storage.data_dir}; Ctrl-C stops", flush=True)
    asyncio.run(serve(config, sock))
