"""Starting a sinkhole sandbox through the gate: the engine's start, then the seal
(`network/seal.py`: its bridge port isolated, Docker's resolver closed in its namespace), then
the answer, so the front never holds a running sandbox that is not sealed.

A seal that cannot be done (a gate without the host's namespaces, as in the compose deployment)
does not fail the start: it is counted, and logged once per distinct problem.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from sandtrap.gate.http import answer_head
from sandtrap.gate.upstream import Upstream
from sandtrap.network.seal import seal

log = logging.getLogger(__name__)

SEAL_TIMEOUT_SECONDS = 30.0
MAX_REMEMBERED = 4096  # sealed sandboxes the keeper need not look at again
_PHRASES = {204: "No Content", 304: "Not Modified", 404: "Not Found", 409: "Conflict"}


class Sealer:
    """Starts and seals this sensor's sandboxes on `bridge`; counts what could not be sealed."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self.sealed = 0
        self.failed = 0
        # container id -> the sealed process, for the keeper's second look (network/seal.py's
        # ResolverKeeper prunes what left the network); bounded all the same.
        self.pids: dict[str, int] = {}
        self._said: set[str] = set()

    async def answer(
        self, upstream: Upstream, container_id: str, status: int, data: object
    ) -> bytes:
        """After the engine's answer to the start of an (already checked) sandbox: seal it when
        it runs; the HTTP answer for the front."""
        if status in (204, 304):
            await self._seal(upstream, container_id)
        payload = b"" if data is None else json.dumps(data).encode()
        phrase = _PHRASES.get(status, "Error" if status >= 400 else "OK")
        return answer_head(status, phrase, len(payload)) + payload

    async def _seal(self, upstream: Upstream, container_id: str) -> None:
        pid = 0
        try:
            async with asyncio.timeout(SEAL_TIMEOUT_SECONDS):
                status, info = await upstream.json(f"containers/{container_id}/json")
                state = info.get("State") if isinstance(info, dict) else None
                found = state.get("Pid") if isinstance(state, dict) else None
                pid = found if isinstance(found, int) else 0
                if status != 200 or pid <= 0:
                    problems = [f"no process to seal (inspect status {status})"]
                else:
                    problems = await seal(pid, self.bridge)
        except (OSError, TimeoutError) as exc:
            problems = [f"{type(exc).__name__}: {exc}"]
        if not problems:
            self.sealed += 1
            if len(self.pids) >= MAX_REMEMBERED:
                del self.pids[next(iter(self.pids))]
            self.pids[container_id] = pid
            return
        if pid > 0 and not await asyncio.to_thread(Path(f"/proc/{pid}").exists):
            # Stopped while it started (a shutdown's stop of a sandbox being created): nothing
            # runs that could be reached, and nothing to warn about.
            log.debug("gate: sandbox %s ended before its seal", container_id[:12])
            return
        self.failed += 1
        fresh = [p for p in problems if p not in self._said]
        if fresh:
            self._said.update(fresh)
            log.warning(
                "gate: sandbox %s not fully sealed (%s; %d so far): its ARP isolation and the "
                "keeper's port isolation still hold",
                container_id[:12],
                "; ".join(fresh),
                self.failed,
            )
