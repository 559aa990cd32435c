"""How one warm sandbox is made: its container body, start and preparation inside.

The pool (sandbox/pool.py) decides when and which image; this does the engine I/O of one
creation: the hardened body (hardening.py), start, preparation (user homes, the baseline for the
diff, realism: host keys and daemons), the sinkhole's resolv.conf and honeytokens when configured.
A failed creation removes what it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sandtrap.config import Config, WeightedImage
from sandtrap.errors import SandboxError
from sandtrap.events import EventSink, SandboxFailure
from sandtrap.sandbox.agent import start_agent
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.hardening import (
    LABEL_AGENT,
    LABEL_LOG_HOSTNAME,
    HostnamePicker,
    blkio_device_for,
    container_body,
    is_lxcfs_serving,
    pool_name,
    prepare,
)
from sandtrap.sandbox.honeytokens import plant_honeytokens
from sandtrap.sandbox.realism import HostKeyFiles
from sandtrap.sandbox.sinknet import nameserver

log = logging.getLogger(__name__)


class SandboxMaker:
    """Makes ready sandboxes for one pool; `learn_engine` first, then `make` per sandbox."""

    def __init__(
        self,
        config: Config,
        engine: ContainerEngine,
        events: EventSink,
        host_keys: Sequence[HostKeyFiles] = (),
    ) -> None:
        self._config = config
        self._engine = engine
        self._events = events
        self._host_keys = tuple(host_keys)
        self._hostnames = HostnamePicker(config.sandbox)
        self._blkio: str | None = None
        self._log_hostnames: dict[str, str | None] = {}
        self._has_agent: dict[str, bool] = {}  # image -> it carries the agent (its label)
        self._lxcfs: bool | None = None  # last seen: LXCFS serving sandbox.lxcfs_dir

    async def learn_engine(self, images: Sequence[WeightedImage]) -> None:
        """What creation needs from the engine once: the disk device to throttle, each image's
        host name in its fake logs and whether it carries the agent, and whether LXCFS serves."""
        info = await self._engine.info()
        self._blkio = blkio_device_for(Path(str(info.get("DockerRootDir", "/var/lib/docker"))))
        for item in images:
            self._log_hostnames[item.image] = await self._engine.image_label(
                item.image, LABEL_LOG_HOSTNAME
            )
            agent = await self._engine.image_label(item.image, LABEL_AGENT)
            self._has_agent[item.image] = agent == "1"
        await self._lxcfs_serving()

    async def make(self, image: str) -> ContainerSandbox:
        """Create, start and prepare one sandbox of `image`; removes it again when that fails."""
        container_id = None
        try:
            hostname = self._hostnames.pick()
            body = container_body(
                self._config.sandbox,
                image=image,
                hostname=hostname,
                sensor=self._config.sensor,
                created=datetime.now(UTC),
                blkio_device=self._blkio,
                lxcfs=await self._lxcfs_serving(),
            )
            container_id = await self._engine.create(body, pool_name())
            await self._engine.start(container_id)
            prepared = await prepare(
                self._engine,
                container_id,
                hostname,
                self._log_hostnames.get(image),
                host_keys=self._host_keys,
                daemons=self._config.sandbox.daemons,
                nameserver=nameserver(self._config.sandbox),
            )
            sandbox = ContainerSandbox(self._engine, container_id, hostname, image)
            sandbox.baseline.update(prepared.baseline)
            sandbox.users.update(prepared.homes)
            if self._config.analysis.honeytokens:
                await plant_honeytokens(self._engine, self._events, sandbox)
            if self._config.sandbox.agent and self._has_agent.get(image, False):
                # Last: the honeytokens' and preparation's execs are not the agent's children.
                sandbox.agent = await start_agent(
                    self._engine, container_id, self._agent_failed(container_id)
                )
        except BaseException:
            if container_id is not None:
                with contextlib.suppress(SandboxError):
                    await asyncio.shield(self._engine.remove(container_id))
            raise
        return sandbox

    def _agent_failed(self, container_id: str) -> Callable[[str], None]:
        def failed(reason: str) -> None:
            self._events.emit(
                SandboxFailure(
                    peer=None, operation="agent", error=reason, container_id=container_id
                )
            )

        return failed

    async def _lxcfs_serving(self) -> bool:
        """Whether new sandboxes get LXCFS's /proc files; says so at start and on each change."""
        sandbox = self._config.sandbox
        if sandbox.lxcfs == "off":
            return False
        serving = await asyncio.to_thread(is_lxcfs_serving, sandbox.lxcfs_dir)
        if serving != self._lxcfs:
            if serving:
                log.info("LXCFS serves %s: sandboxes show their own memory", sandbox.lxcfs_dir)
            else:
                log.warning(
                    "LXCFS is not running at %s: sandboxes show the host's memory and CPUs "
                    "(install and start lxcfs, see docs/fingerprinting.md)",
                    sandbox.lxcfs_dir,
                )
            self._lxcfs = serving
        return serving


__all__ = ["SandboxMaker"]
