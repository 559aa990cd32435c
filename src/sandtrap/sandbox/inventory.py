"""What sandboxes this sensor has: a read-only listing for the CLI and health checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sandtrap.errors import SandboxError
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.hardening import (
    LABEL_CREATED,
    LABEL_HOSTNAME,
    POOL_PREFIX,
    parse_engine_time,
    parse_session_name,
    sandbox_labels,
)


@dataclass(frozen=True)
class SandboxRow:
    container_id: str
    name: str
    role: str  # "pool" or "session"
    session_id: str | None
    src_ip: str | None
    hostname: str
    image: str
    state: str
    created: datetime | None
    size_bytes: int


async def list_sandboxes(engine: ContainerEngine, sensor: str) -> list[SandboxRow]:
    rows = []
    for item in await engine.containers(*sandbox_labels(sensor)):
        name = (item.get("Names") or ["/"])[0].lstrip("/")
        labels = item.get("Labels") or {}
        parsed = parse_session_name(name)
        try:
            size = int((await engine.inspect(str(item["Id"]), size=True)).get("SizeRw") or 0)
        except SandboxError:
            size = 0
        rows.append(
            SandboxRow(
                container_id=str(item["Id"]),
                name=name,
                role="pool" if name.startswith(POOL_PREFIX) else "session",
                session_id=parsed.session_id if parsed else None,
                src_ip=parsed.src_ip if parsed else None,
                hostname=str(labels.get(LABEL_HOSTNAME, "")),
                image=str(item.get("Image", "")),
                state=str(item.get("State", "")),
                created=parse_engine_time(labels.get(LABEL_CREATED)),
                size_bytes=size,
            )
        )
    rows.sort(key=lambda row: row.created or datetime.min.replace(tzinfo=UTC), reverse=True)
    return rows
