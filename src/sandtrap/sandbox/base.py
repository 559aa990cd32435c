"""The seam between sessions and containers: the Sandbox, ExecStream and SandboxProvider protocols.

Session and proxy code speak only these terms; `sandbox/container.py` implements Sandbox over any
`ContainerEngine` (Docker or fake), `sandbox/pool.py` the provider, and `sandbox/fake.py` both in
memory without a pool for fast tests of SSH and session logic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sandtrap.events import Peer

STDOUT = 1
STDERR = 2


@dataclass(frozen=True)
class Chunk:
    """Output of a process: `stream` is STDOUT or STDERR (always STDOUT with a TTY)."""

    stream: int
    data: bytes


class ExecStream(Protocol):
    """A process running in a sandbox, with its stdin, output and exit status.

    Cancellation: every method may be cancelled; `close()` must still be called (it is idempotent)
    and kills nothing by itself but releases the connection to the engine.
    """

    async def read(self) -> Chunk | None:
        """Next chunk of output, or None once the process closed its output."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the process's stdin (waits while the engine applies back-pressure)."""
        ...

    async def close_stdin(self) -> None:
        """Signal end of input (the process reads EOF) while output keeps flowing."""
        ...

    async def resize(self, width: int, height: int) -> None:
        """Change the terminal size (TTY processes only; ignored otherwise)."""
        ...

    async def wait(self) -> int:
        """The exit status once the process has ended (call after read() returned None)."""
        ...

    async def close(self) -> None:
        """Release the stream; idempotent."""
        ...


class Sandbox(Protocol):
    """One container that serves one SSH connection."""

    @property
    def id(self) -> str: ...

    @property
    def hostname(self) -> str: ...

    @property
    def image(self) -> str: ...

    async def ensure_user(self, username: str) -> str:
        """Make sure the login user exists (created with a home when missing); returns its home."""
        ...

    async def record_login(self, username: str, src_ip: str) -> bool:
        """Record the newest PTY login of `username` in utmp, wtmp and lastlog, as sshd does;
        False when it found none to record (the image or the process is not there)."""
        ...

    async def exec(
        self,
        argv: Sequence[str],
        *,
        user: str,
        tty: bool,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> ExecStream:
        """Start a process; `size` is (width, height) for a TTY."""
        ...


class SandboxProvider(Protocol):
    """Hands out sandboxes to sessions and takes them back (the pool)."""

    async def allocate(self, peer: Peer) -> Sandbox:
        """A running sandbox for this session.

        Raises:
            PoolExhausted: none became available within the allocation timeout.
            SandboxError: the engine failed.
        """
        ...

    async def release(self, sandbox: Sandbox, peer: Peer) -> None:
        """The session is over: stop (never remove) the sandbox and record what changed in it.

        Never raises for engine failures (they are logged and become events); safe to call from a
        cancelled task inside `asyncio.shield`.
        """
        ...
