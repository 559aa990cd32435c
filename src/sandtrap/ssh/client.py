"""SandTrap as an SSH client of itself: one password login that runs one command.

Used by `sandtrap verify-security` to time a fresh login after its bombs; kept here because
asyncssh lives only in `ssh/` (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncssh


@dataclass(frozen=True)
class LoginResult:
    """How a login went: `error` is None on success, `elapsed` covers connect to command exit."""

    stdout: str
    elapsed: float
    error: str | None = None


async def login_and_run(
    host: str, port: int, username: str, password: str, command: str, within_seconds: float = 30
) -> LoginResult:
    """Log in with a password (no keys, no agent, any host key) and run `command` to its end."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(within_seconds):
            conn = await asyncssh.connect(
                host,
                port,
                username=username,
                password=password,
                known_hosts=None,
                client_keys=None,
                agent_path=None,
            )
            async with conn:
                result = await conn.run(command, check=False)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        return LoginResult("", time.monotonic() - started, str(exc) or type(exc).__name__)
    return LoginResult(str(result.stdout or ""), time.monotonic() - started)
