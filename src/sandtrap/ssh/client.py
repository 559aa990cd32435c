"""SandTrap as an SSH client of itself: one password login that runs one command, and a scripted
password guesser.

The login is `sandtrap verify-security`'s (a fresh login after its bombs) and, with a PTY,
`sandtrap verify-realism`'s; the guesser drives the brute-force tests and benchmark. Kept here
because asyncssh lives only in `ssh/` (DESIGN.md).
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
    # The server's host key as `ssh-keygen -l` prints it ("SHA256:..."), when asked for.
    host_key_fingerprint: str | None = None


async def login_pty_and_run(
    host: str, port: int, username: str, password: str, command: str, within_seconds: float = 60
) -> LoginResult:
    """Like `login_and_run`, with a PTY (as an interactive attacker has) and the Ed25519 host key,
    whose fingerprint is returned (`sandtrap verify-realism`)."""
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
                server_host_key_algs=["ssh-ed25519"],
            )
            async with conn:
                key = conn.get_server_host_key()
                result = await conn.run(command, check=False, term_type="xterm")
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        return LoginResult("", time.monotonic() - started, str(exc) or type(exc).__name__)
    fingerprint = key.get_fingerprint("sha256") if key is not None else None
    return LoginResult(str(result.stdout or ""), time.monotonic() - started, None, fingerprint)


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


# --- a scripted password guesser (tests and bench/: "every attempt recorded") -----------------


@dataclass(frozen=True)
class GuessResult:
    """What a guessing run saw: passwords sent (an answer came or the connection ended after it),
    connections opened and refused before authentication, and the run's length."""

    sent: list[str]
    connections: int
    refused: int
    elapsed: float


class _Guesser(asyncssh.SSHClient):
    def __init__(self, pending: list[str], sent: list[str], per_connection: int) -> None:
        self._pending = pending
        self._sent = sent
        self._left = per_connection

    def password_auth_requested(self) -> str | None:
        if not self._left or not self._pending:
            return None
        self._left -= 1
        password = self._pending.pop()
        self._sent.append(password)
        return password


async def guess_passwords(
    host: str,
    port: int,
    username: str,
    passwords: list[str],
    *,
    concurrency: int,
    per_connection: int,
    local_addr: tuple[str, int] | None = None,
    within_seconds: float = 600,
) -> GuessResult:
    """Try `passwords` as a brute-forcer does: `concurrency` connections at once, each trying up
    to `per_connection` passwords (the server may end it sooner), a new connection when one ends,
    until every password was sent. A connection refused before authentication sends nothing, so
    nothing is lost on the client's side: its passwords go to the next connection.

    Raises:
        TimeoutError: not done within `within_seconds`.
    """
    pending = list(reversed(passwords))
    sent: list[str] = []
    connections = refused = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal connections, refused
        while pending:
            connections += 1
            before = len(sent)
            try:
                conn, _ = await asyncssh.create_connection(
                    lambda: _Guesser(pending, sent, per_connection),
                    host,
                    port,
                    username=username,
                    known_hosts=None,
                    client_keys=None,
                    agent_path=None,
                    preferred_auth="password",
                    local_addr=local_addr,
                )
                conn.close()  # a password was accepted: this bot moves on
            except (OSError, asyncssh.Error):
                if len(sent) == before:
                    refused += 1

    async with asyncio.timeout(within_seconds):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return GuessResult(sent, connections, refused, time.monotonic() - started)
