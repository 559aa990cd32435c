"""A whole SandTrap service in a background thread, for tests and benchmarks that drive it from
ordinary blocking code (OpenSSH clients through subprocess, pexpect).

Shipped in the package, like `sandbox/fake.py`; never used by the service itself. `serve()` runs on
its own event loop in a daemon thread; `stop()` sets its stop event, so the phased shutdown runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

from sandtrap.app import Service, serve
from sandtrap.config import Config

T = TypeVar("T")

# An OpenSSH client that logs in to a throwaway honeypot on loopback: no host key checks, no
# key files tried, no chatter (tests and benchmarks add their own options after these).
OPENSSH_CLIENT_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "PubkeyAuthentication=no",
)


class ThreadedService:
    """`start()` returns once the listeners are open (or raises); `stop()` waits for shutdown."""

    def __init__(self, config: Config, thread_name: str = "sandtrap") -> None:
        self.config = config
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._services: list[Service] = []
        self._thread = threading.Thread(target=self._main, name=thread_name, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            waiter = asyncio.create_task(ready.wait())
            waiter.add_done_callback(lambda _task: self._ready.set())
            try:
                await serve(self.config, ready=ready, stop=self._stop, on_ready=self._services)
            finally:
                waiter.cancel()

        try:
            asyncio.run(run())
        except BaseException as exc:  # handed to the thread that called start()
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout_seconds: float = 180) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout_seconds) or self.error is not None or not self._services:
            raise RuntimeError(f"SandTrap did not start: {self.error!r}")
        return self

    @property
    def service(self) -> Service:
        return self._services[0]

    @property
    def port(self) -> int:
        return self.service.front.ports[0]

    def call(
        self, factory: Callable[[], Coroutine[Any, Any, T]], timeout_seconds: float = 120
    ) -> T:
        """Run a coroutine on the service's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("service not started")
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout_seconds)

    def wait_warm(self, timeout_seconds: float = 120) -> None:
        """Wait until the pool is at its size."""
        self.call(self.service.pool.wait_warm, timeout_seconds)

    def stop(self, timeout_seconds: float = 180) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_seconds)
        if self._thread.is_alive():
            raise RuntimeError("SandTrap did not stop")
