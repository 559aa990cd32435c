"""The event catalogue: one frozen dataclass per `eventid`, each documented in docs/events.md.

Events are the honeypot's data product (a test keeps that page and this catalogue in step). What
every event carries and how it is serialised is events/base.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sandtrap.events.analysis import ANALYSIS_EVENTS
from sandtrap.events.base import Event, Peer, SessionEvent, SourceEvent
from sandtrap.events.network import NETWORK_EVENTS

# --- connection and authentication -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SessionConnect(SessionEvent):
    """A TCP connection reached the SSH listener (before any SSH data)."""

    eventid: ClassVar[str] = "session.connect"
    dst_ip: str | None = None
    protocol: str = "ssh"
    proxy_ip: str | None = None
    proxy_port: int | None = None


@dataclass(frozen=True, kw_only=True)
class SessionRefused(SourceEvent):
    """New connections refused by a limit before any SSH data (the client sees what a loaded sshd
    sends: `Exceeded MaxStartups`, or a bare close when rate limited); counted per source and
    interval."""

    eventid: ClassVar[str] = "session.refused"
    limit: int


@dataclass(frozen=True, kw_only=True)
class ProxyRefused(SourceEvent):
    """Connections on a PROXY protocol listener that sent no valid header in time; each was closed.

    `src_ip`/`src_port` are the socket's peer (the balancer, or whoever reached the listener);
    `bytes_received` is the sum over the counted connections.
    """

    eventid: ClassVar[str] = "proxy.refused"
    bytes_received: int


@dataclass(frozen=True, kw_only=True)
class ClientKex(SessionEvent):
    """The client's identification string and KEXINIT: its HASSH fingerprint and algorithm lists."""

    eventid: ClassVar[str] = "session.client.kex"
    client_version: str
    hassh: str
    hassh_algorithms: str
    kex_algs: list[str]
    enc_algs: list[str]
    mac_algs: list[str]
    comp_algs: list[str]
    # Issue 17: host key algorithms too (Cowrie's keyAlgs); not part of HASSH.
    key_algs: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class AuthFailed(SessionEvent):
    """An authentication attempt that was refused."""

    eventid: ClassVar[str] = "auth.failed"
    username: str
    method: str
    password: str | None = None
    key_type: str | None = None
    key_fingerprint: str | None = None
    key: str | None = None
    reason: str = "invalid credentials"


@dataclass(frozen=True, kw_only=True)
class AuthSuccess(SessionEvent):
    """An authentication attempt that was accepted; `reason` says which rule accepted it."""

    eventid: ClassVar[str] = "auth.success"
    username: str
    method: str
    password: str | None = None
    key_type: str | None = None
    key_fingerprint: str | None = None
    key: str | None = None
    reason: str = "credentials"


@dataclass(frozen=True, kw_only=True)
class ForwardRefused(SessionEvent):
    """A forwarding request (local, remote, agent, X11) that was refused; nothing was relayed."""

    eventid: ClassVar[str] = "session.forward.refused"
    kind: str
    host: str | None = None
    port: int | None = None
    origin_host: str | None = None
    origin_port: int | None = None


@dataclass(frozen=True, kw_only=True)
class RequestRefused(SessionEvent):
    """A channel or session request that was refused (unknown subsystem, env, ...)."""

    eventid: ClassVar[str] = "session.request.refused"
    request: str
    detail: str | None = None


# --- channels ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SessionShell(SessionEvent):
    """An interactive shell started (with a PTY when `term` is set)."""

    eventid: ClassVar[str] = "session.shell"
    channel: int
    term: str | None = None
    width: int | None = None
    height: int | None = None
    recording: str | None = None


@dataclass(frozen=True, kw_only=True)
class SessionExec(SessionEvent):
    """A command requested with `ssh host 'command'` (also scp), exactly as sent."""

    eventid: ClassVar[str] = "session.exec"
    channel: int
    input: str
    pty: bool = False
    recording: str | None = None


@dataclass(frozen=True, kw_only=True)
class SessionEnv(SessionEvent):
    """An environment variable the client asked for (`env` request), passed on or not; the
    outputs' `cowrie.client.var`."""

    eventid: ClassVar[str] = "session.env"
    channel: int
    name: str
    value: str


@dataclass(frozen=True, kw_only=True)
class SessionCommand(SessionEvent):
    """A line entered in an interactive shell, as the shell had it when Enter was pressed."""

    eventid: ClassVar[str] = "session.command"
    channel: int
    input: str


@dataclass(frozen=True, kw_only=True)
class SessionSubsystem(SessionEvent):
    """A subsystem request (sftp)."""

    eventid: ClassVar[str] = "session.subsystem"
    channel: int
    name: str


@dataclass(frozen=True, kw_only=True)
class SessionResize(SessionEvent):
    """The client's terminal changed size."""

    eventid: ClassVar[str] = "session.resize"
    channel: int
    width: int
    height: int


@dataclass(frozen=True, kw_only=True)
class ChannelClosed(SessionEvent):
    """A shell, exec or subsystem channel ended."""

    eventid: ClassVar[str] = "session.channel.closed"
    channel: int
    exit_status: int | None
    bytes_in: int
    bytes_out: int
    duration: float


@dataclass(frozen=True, kw_only=True)
class SessionClosed(SessionEvent):
    """The SSH connection ended; `reason` is why."""

    eventid: ClassVar[str] = "session.closed"
    duration: float
    reason: str
    username: str | None = None
    container_id: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    exit_status: int | None = None


@dataclass(frozen=True, kw_only=True)
class SessionTimeout(SessionEvent):
    """The connection was ended by the idle or the absolute session timeout."""

    eventid: ClassVar[str] = "session.timeout"
    kind: str
    limit_seconds: float


@dataclass(frozen=True, kw_only=True)
class SessionBytesExceeded(SessionEvent):
    """The connection moved more bytes in one direction than allowed; it was ended."""

    eventid: ClassVar[str] = "session.bytes_exceeded"
    direction: str
    limit: int
    bytes: int


# --- sandboxes -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SandboxAllocated(SessionEvent):
    """A sandbox was handed to a session."""

    eventid: ClassVar[str] = "sandbox.allocated"
    container_id: str
    hostname: str
    image: str
    wait_ms: float
    sticky: bool = False
    shared: bool = False


@dataclass(frozen=True, kw_only=True)
class SandboxAllocationFailed(SessionEvent):
    """No sandbox could be had for a session; the connection is closed."""

    eventid: ClassVar[str] = "sandbox.allocation_failed"
    reason: str


@dataclass(frozen=True, kw_only=True)
class SandboxReleased(SessionEvent):
    """A session's sandbox was stopped and kept for forensics."""

    eventid: ClassVar[str] = "sandbox.released"
    container_id: str
    stopped: bool


@dataclass(frozen=True, kw_only=True)
class SandboxDiff(SessionEvent):
    """What changed in the sandbox's filesystem during the session (`docker diff`)."""

    eventid: ClassVar[str] = "sandbox.diff"
    container_id: str
    changes: list[dict[str, str]]
    total: int
    truncated: bool = False
    # Keys in authorized_keys files the session wrote: {path, key_type, key_fingerprint, key,
    # comment} (issue 19); their changes carry "flag": "authorized_keys".
    authorized_keys: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SandboxArtifact(SessionEvent):
    """A file created or changed in the sandbox, copied to var/artifacts/<sha256>."""

    eventid: ClassVar[str] = "sandbox.artifact"
    container_id: str
    path: str
    size: int
    sha256: str
    artifact: str


@dataclass(frozen=True, kw_only=True)
class SandboxDiskExceeded(SessionEvent):
    """The sandbox's writable layer outgrew its budget; its session is ended."""

    eventid: ClassVar[str] = "sandbox.disk_exceeded"
    container_id: str
    size_mb: float
    limit_mb: int


@dataclass(frozen=True, kw_only=True)
class SandboxDied(SessionEvent):
    """The sandbox stopped while its session was open (OOM kill, a crash); the session is ended."""

    eventid: ClassVar[str] = "sandbox.died"
    container_id: str
    exit_code: int | None
    oom_killed: bool


@dataclass(frozen=True, kw_only=True)
class SandboxFailure(Event):
    """The engine failed an operation; the service carries on and retries where it can.

    `peer` is the session whose operation failed, None for the pool's own work (refill, health).
    """

    eventid: ClassVar[str] = "sandbox.error"
    peer: Peer | None
    operation: str
    error: str
    container_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class SandboxPruned(Event):
    """Retention removed a kept sandbox."""

    eventid: ClassVar[str] = "sandbox.pruned"
    container_id: str
    reason: str


# --- the Engine API gate ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GateRefused(Event):
    """The Engine API gate refused requests (they never reached the engine), aggregated per rule.

    Written by the gate process to var/log/gate.jsonl: the first refusal of a `rule` at once
    (`count` 1), then one event per rule per interval with the `count` of refusals it covers and
    the first of them as the example (`method`, `path`, `reason`, and the peer credentials of the
    Unix socket client, normally the SSH front). See gate/refusals.py.
    """

    eventid: ClassVar[str] = "gate.refused"
    method: str
    path: str
    reason: str
    rule: str = "route"
    count: int = 1
    client_pid: int | None = None
    client_uid: int | None = None


CATALOGUE: dict[str, type[Event]] = {
    cls.eventid: cls
    for cls in (
        SessionConnect,
        SessionRefused,
        ProxyRefused,
        ClientKex,
        AuthFailed,
        AuthSuccess,
        ForwardRefused,
        RequestRefused,
        SessionShell,
        SessionExec,
        SessionCommand,
        SessionEnv,
        SessionSubsystem,
        SessionResize,
        ChannelClosed,
        SessionClosed,
        SessionTimeout,
        SessionBytesExceeded,
        SandboxAllocated,
        SandboxAllocationFailed,
        SandboxReleased,
        SandboxDiff,
        SandboxArtifact,
        SandboxDiskExceeded,
        SandboxDied,
        SandboxFailure,
        SandboxPruned,
        GateRefused,
    )
}
CATALOGUE.update({cls.eventid: cls for cls in NETWORK_EVENTS})
# The threat-analysis events (issue 19) live in events/analysis.py.
CATALOGUE.update({cls.eventid: cls for cls in ANALYSIS_EVENTS})


__all__ = [
    "CATALOGUE",
    "AuthFailed",
    "AuthSuccess",
    "ChannelClosed",
    "ClientKex",
    "ForwardRefused",
    "GateRefused",
    "ProxyRefused",
    "RequestRefused",
    "SandboxAllocated",
    "SandboxAllocationFailed",
    "SandboxArtifact",
    "SandboxDied",
    "SandboxDiff",
    "SandboxDiskExceeded",
    "SandboxFailure",
    "SandboxPruned",
    "SandboxReleased",
    "SessionBytesExceeded",
    "SessionClosed",
    "SessionCommand",
    "SessionConnect",
    "SessionEnv",
    "SessionExec",
    "SessionRefused",
    "SessionResize",
    "SessionShell",
    "SessionSubsystem",
    "SessionTimeout",
]
