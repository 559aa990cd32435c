"""The connection's sandbox: allocated at its first channel, shared by all, released exactly once.

Owns the lease on the pool (`SandboxProvider`) and the login user's home in the sandbox. What the
pool does on allocate and release (events, forensics) is left to sandbox/.
"""

from __future__ import annotations

import asyncio
import logging

from sandtrap import events as ev
from sandtrap.errors import AllocationFailed, PoolExhausted, SandboxError
from sandtrap.events import EventSink, Peer
from sandtrap.sandbox.base import Sandbox, SandboxProvider

log = logging.getLogger(__name__)

# The pool enforces `allocate` itself and says why it gave up; the lease's own bound only catches a
# provider that never answers, so it falls due a little later and never hides the pool's reason.
ALLOCATE_BACKSTOP_SECONDS = 1.0


class SandboxLease:
    """The connection's sandbox: allocated at the first channel, shared, released exactly once.

    `acquire()` is safe to call from several channels at once. `release()` is idempotent, shielded
    from cancellation, and never raises.
    """

    def __init__(
        self,
        provider: SandboxProvider,
        events: EventSink,
        peer: Peer,
        allocate_timeout_seconds: float,
    ) -> None:
        self._provider = provider
        self._events = events
        self._peer = peer
        self._allocate_timeout = allocate_timeout_seconds
        self._lock = asyncio.Lock()
        self._sandbox: Sandbox | None = None
        self._home: str | None = None
        self._released = False
        self._failed: str | None = None

    @property
    def container_id(self) -> str | None:
        return self._sandbox.id if self._sandbox is not None else None

    async def acquire(self, username: str) -> tuple[Sandbox, str]:
        """The sandbox and the login user's home in it.

        Raises:
            AllocationFailed: the pool had none within the allocation timeout, or the engine failed.
        """
        async with self._lock:
            if self._failed is not None or self._released:
                raise AllocationFailed(self._failed or "released")
            if self._sandbox is None:
                await self._allocate(username)
            if self._sandbox is None or self._home is None:
                raise AllocationFailed("no sandbox")
            return self._sandbox, self._home

    async def _allocate(self, username: str) -> None:
        peer = self._peer
        try:
            # Named timeout `allocate`: the pool enforces it; this backstop bounds any provider.
            async with asyncio.timeout(self._allocate_timeout + ALLOCATE_BACKSTOP_SECONDS):
                sandbox = await self._provider.allocate(peer)
        except (PoolExhausted, TimeoutError) as exc:
            self._fail(f"pool exhausted: {exc}" if str(exc) else "pool exhausted")
        except SandboxError as exc:
            self._fail(f"sandbox error: {exc}")
        # The provider records the allocation itself (sandbox.allocated).
        self._sandbox = sandbox
        try:
            self._home = await sandbox.ensure_user(username)
        except SandboxError as exc:
            self._fail(f"ensure_user failed: {exc}")

    def _fail(self, reason: str) -> None:
        self._failed = reason
        self._events.emit(ev.SandboxAllocationFailed(peer=self._peer, reason=reason))
        raise AllocationFailed(reason)

    async def release(self) -> None:
        """Give the sandbox back (stopped and kept by the provider); no-op without one."""
        if self._released:
            return
        self._released = True
        sandbox = self._sandbox
        if sandbox is None:
            return
        try:
            await asyncio.shield(self._provider.release(sandbox, self._peer))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "releasing sandbox %s of session %s failed", sandbox.id, self._peer.session_id
            )


__all__ = ["SandboxLease"]
