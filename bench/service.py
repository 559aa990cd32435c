"""SandTrap in a background thread of the harness, on 127.0.0.1 port 0.

The same approach as the real-engine tests (tests/docker/service.py), copied rather than imported:
`serve()` runs on its own event loop in a daemon thread; `stop()` sets its stop event and joins.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sandtrap.app import Service, serve
from sandtrap.config import Config, parse_config

T = TypeVar("T")

BENCH_USER = "root"
BENCH_PASSWORD = "benchpass"  # noqa: S105 - a throwaway login for loopback benchmarks
_LIFTED_LIMITS: dict[str, Any] = {
    "max_connections": 1000,
    "max_connections_per_ip": 1000,
    "connections_per_ip_per_minute": 100_000,
    "max_startups": "1000:30:1000",
    "max_bytes_out": 4 * 1024**3,
}


def bench_config(
    data_dir: Path, sensor: str, image: str, max_sandboxes: int, pool_size: int | None = None
) -> Config:
    """SandTrap's defaults (pool size unless given, hardening) with loopback listen and one
    known login."""
    pool: dict[str, int] = {"max_sandboxes": max_sandboxes}
    if pool_size is not None:
        pool["size"] = pool_size
    extra: dict[str, Any] = {}
    limits_model = getattr(Config.model_fields.get("limits"), "annotation", None)
    if limits_model is not None:
        # Per-IP and per-connection limits would throttle a harness whose every client comes
        # from 127.0.0.1: lift those the config has (the harness itself bounds its load).
        known = getattr(limits_model, "model_fields", {})
        extra["limits"] = {k: v for k, v in _LIFTED_LIMITS.items() if k in known}
    return parse_config(
        {
            **extra,
            "sensor": sensor,
            "ssh": {"listen": ["127.0.0.1:0"]},
            "auth": {"credentials": [{"username": BENCH_USER, "password": BENCH_PASSWORD}]},
            "pool": pool,
            "sandbox": {"image": image},
            "storage": {"data_dir": str(data_dir)},
            "logging": {"level": "WARNING"},
        }
    )


class RunningService:
    """Starts `serve()` on its own loop in a thread; `stop()` runs the phased shutdown."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._services: list[Service] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sandtrap-bench", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            waiter = asyncio.create_task(ready.wait())
            waiter.add_done_callback(lambda _t: self._ready.set())
            try:
                await serve(self.config, ready=ready, stop=self._stop, on_ready=self._services)
            finally:
                waiter.cancel()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported to the harness thread
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout_seconds: float = 180) -> RunningService:
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
        future = asyncio.run_coroutine_threadsafe(factory(), self._loop)
        return future.result(timeout_seconds)

    def wait_warm(self, timeout_seconds: float = 120) -> None:
        self.call(self.service.pool.wait_warm, timeout_seconds)

    def busy(self) -> int:
        async def read() -> int:
            return self.service.pool.statistics().busy

        return self.call(read)

    def stop(self, timeout_seconds: float = 180) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_seconds)
        if self._thread.is_alive():
            raise RuntimeError("SandTrap did not stop")
