"""A real SandTrap service in a background thread, for tests that drive it with real clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

from sandtrap.app import Service, serve
from sandtrap.config import Config, parse_config
from tests.conftest import IMAGE

SSH_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "PubkeyAuthentication=no",
]


def service_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "sensor": f"test-{uuid.uuid4().hex[:10]}",
        "ssh": {"listen": ["127.0.0.1:0"], "auth_failure_delay_seconds": 0.1},
        "auth": {
            "credentials": [
                {"username": "root", "password": "123456"},
                {"username": "oracle", "password": "*"},
            ]
        },
        "pool": {"size": 2, "max_sandboxes": 6, "allocate_timeout_seconds": 20},
        "sandbox": {"image": IMAGE},
        "storage": {"data_dir": str(data_dir)},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


class RunningService:
    """Starts `serve()` on its own loop in a thread; `stop()` runs the phased shutdown."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._services: list[Service] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sandtrap-test", daemon=True)

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
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 120) -> RunningService:
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None or not self._services:
            raise RuntimeError(f"service did not start: {self.error!r}")
        return self

    @property
    def service(self) -> Service:
        return self._services[0]

    @property
    def port(self) -> int:
        return self.service.front.ports[0]

    def call(self, coro_factory: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the service's loop (e.g. to wait for the pool)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(), self._loop).result(timeout)

    def stop(self, timeout: float = 120) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("service did not stop")

    def events(
        self, eventid: str | None = None, session: str | None = None
    ) -> list[dict[str, Any]]:
        path = self.config.storage.data_dir / "log" / "events.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return [
            r
            for r in records
            if (eventid is None or r["eventid"] == eventid)
            and (session is None or r.get("session") == session)
        ]

    def ssh(
        self,
        command: str | None,
        *,
        user: str = "root",
        password: str = "123456",  # noqa: S107 - the honeypot's bait password
        stdin: bytes | None = None,
        extra: list[str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["sshpass", "-p", password, "ssh", "-p", str(self.port), *SSH_OPTS, *(extra or [])]
        argv += [f"{user}@127.0.0.1"]
        if command is not None:
            argv.append(command)
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)


def remove_sensor_containers(sensor: str) -> None:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=sandtrap.sensor={sensor}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
