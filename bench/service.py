"""SandTrap in a background thread of the harness, on 127.0.0.1 port 0.

The thread runner is sandtrap.testing.ThreadedService, shared with the real-engine tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sandtrap.config import Config, parse_config
from sandtrap.testing import ThreadedService

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
    data_dir: Path,
    sensor: str,
    image: str,
    max_sandboxes: int | None,
    pool_size: int | None = None,
    lift_limits: bool = True,
) -> Config:
    """SandTrap's defaults (pool size and max_sandboxes unless given, hardening) with loopback
    listen and one known login; the per-IP limits lifted unless `lift_limits` is False."""
    pool: dict[str, int] = {}
    if max_sandboxes is not None:
        pool["max_sandboxes"] = max_sandboxes
    if pool_size is not None:
        pool["size"] = pool_size
    extra: dict[str, Any] = {}
    limits_model = getattr(Config.model_fields.get("limits"), "annotation", None)
    if limits_model is not None and lift_limits:
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
            # SANDTRAP_BENCH_AGENT=1: channels by the in-sandbox agent (issue 15), not execs.
            "sandbox": {"image": image, "agent": os.environ.get("SANDTRAP_BENCH_AGENT") == "1"},
            "storage": {"data_dir": str(data_dir)},
            "logging": {"level": "WARNING"},
        }
    )


class RunningService(ThreadedService):
    """The service in a thread (sandtrap.testing), plus what the harness reads from it."""

    def busy(self) -> int:
        async def read() -> int:
            return self.service.pool.statistics().busy

        return self.call(read)
