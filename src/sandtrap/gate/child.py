"""The gate as a child of `sandtrap run` (`sandbox.gate: auto`): start, readiness, stop.

Owns the child process only; what the gate does is `sandtrap.gate`. The child gets the effective
configuration as JSON in its environment, answers on a socket under var/run/, prints a ready line,
and exits when its stdin (our pipe) closes, so it never outlives this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable
from sandtrap.paths import DataLayout

log = logging.getLogger(__name__)

CONFIG_ENV = "SANDTRAP_GATE_CONFIG_JSON"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0
# sun_path holds 108 bytes; keep a margin.
_MAX_SOCKET_PATH = 100


def auto_socket(config: Config) -> Path:
    """var/run/gate.sock, or a private directory under /tmp when that path is too long."""
    data_dir = Path(os.path.abspath(config.storage.data_dir))
    path = DataLayout(data_dir).gate_socket
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sandtrap-gate-{os.getuid()}-{digest}" / "gate.sock"


def _private_dir(path: Path) -> None:
    """Create `path` (0750), or accept an existing one only if it is ours and not wider."""
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o027:
        raise EngineUnavailable(f"gate socket directory {path} is not a private directory of ours")


class GateChild:
    """Starts the gate for `sandtrap run` when `sandbox.gate` is `auto`; a no-op otherwise.

    Constructing it does no I/O. `docker_url` is where the service reaches the engine. `stop()`
    closes the child's stdin and waits; it kills the child if it does not exit in time.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        mode = config.sandbox.gate
        self.socket: Path | None = auto_socket(config) if mode == "auto" else None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def docker_url(self) -> str:
        mode = self._config.sandbox.gate
        if mode == "off":
            return self._config.sandbox.docker_url
        return f"unix://{self.socket if self.socket is not None else mode}"

    async def start(self) -> None:
        if self.socket is None:
            return
        _private_dir(self.socket.parent)
        env = dict(os.environ)
        env[CONFIG_ENV] = json.dumps(self._config.model_dump(mode="json"))
        argv = [
            sys.executable,
            "-m",
            "sandtrap",
            "gate",
            "--config-from-env",
            "--lifeline",
            "--listen",
            str(self.socket),
            "--upstream",
            self._config.sandbox.docker_url,
        ]
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is ours to handle, not the gate's
        )
        line = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_START_TIMEOUT):
                if self._process.stdout is not None:
                    line = await self._process.stdout.readline()
        if not line.startswith(b"sandtrap-gate ready"):
            await self.stop()
            if line.startswith(b"sandtrap-gate error: "):
                reason = line.removeprefix(b"sandtrap-gate error: ").decode("utf-8", "replace")
                raise EngineUnavailable(
                    f"{reason.strip()} (start Docker, e.g. scripts/ensure-docker, or set "
                    "sandbox.docker_url)"
                )
            raise EngineUnavailable(
                "the Engine API gate did not start (see its log above); "
                f"engine {self._config.sandbox.docker_url}"
            )
        log.info("Engine API gate running (pid %d) on %s", self._process.pid, self.socket)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            log.warning("the gate did not stop in %.0fs; killing it", _STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def engine_url(config: Config) -> str:
    """Where one-off commands (sandboxes, export) reach the engine: the gate when it runs on its
    own (`sandbox.gate` is a socket path, e.g. inside the compose deployment), else docker_url."""
    if config.sandbox.gate in ("auto", "off"):
        return config.sandbox.docker_url
    return f"unix://{config.sandbox.gate}"
