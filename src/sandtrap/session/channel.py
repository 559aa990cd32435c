"""One session channel from request to close: what runs, its recording, its events.

Owns what sshd would run for a shell, exec or subsystem request (`plan_exec`), the channel's
recorder and events, and `run_channel`. Moving bytes is left to proxy.py; the sandbox lease and
the connection's limits to the rest of session/; SSH protocol details to ssh/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sandtrap import events as ev
from sandtrap.errors import SandboxError
from sandtrap.events import EventSink, Peer
from sandtrap.limits import (
    MAX_COMMAND_BYTES,
    MAX_ENV_EVENTS,
    MAX_ENV_VALUE_BYTES,
    MAX_NAME_BYTES,
    accepted_env,
    cap_text,
    is_safe_term,
)
from sandtrap.paths import cast_file
from sandtrap.persona import Persona
from sandtrap.proxy import ChannelIO, Resize, pump
from sandtrap.recording.asciicast import Header
from sandtrap.recording.commands import LineCommands, TerminalCommands
from sandtrap.recording.recorder import ChannelRecorder, display_size
from sandtrap.sandbox.base import Sandbox
from sandtrap.session.lease import SandboxLease
from sandtrap.session.totals import SessionTotals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelRequest:
    """What the client asked a session channel to run."""

    channel: int
    kind: Literal["shell", "exec", "subsystem"]
    username: str
    command: str | None = None
    subsystem: str | None = None
    term: str | None = None
    size: tuple[int, int] | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_pty(self) -> bool:
        return self.term is not None


@dataclass(frozen=True)
class ExecPlan:
    argv: tuple[str, ...]
    tty: bool
    env: dict[str, str]


def plan_exec(request: ChannelRequest, persona: Persona) -> ExecPlan:
    """What sshd would run for `request` (pure).

    Attacker strings reach the engine only as argv/env entries of a JSON body, never a host shell;
    env is limited to AcceptEnv names with printable ASCII values (limits.accepted_env) and TERM to
    terminfo-name characters (others are left out, the shell then runs without TERM). sshd hands
    the command to execve as a C string, so it ends at the first NUL here too.
    """
    env, _ = accepted_env(request.env, persona.accept_env)
    if request.term is not None and is_safe_term(request.term):
        env["TERM"] = request.term
    if request.kind == "subsystem":
        return ExecPlan((persona.sftp_server,), tty=False, env=env)
    if request.kind == "exec":
        command = (request.command or "").split("\x00", 1)[0]
        return ExecPlan((*persona.command_shell, command), tty=request.has_pty, env=env)
    return ExecPlan(persona.login_shell, tty=request.has_pty, env=env)


def refused_settings(request: ChannelRequest, persona: Persona) -> list[tuple[str, str]]:
    """(request, detail) for each part of `request` that plan_exec leaves out (for events)."""
    refused = [
        ("env", cap_text(name, MAX_NAME_BYTES))
        for name in accepted_env(request.env, persona.accept_env)[1]
    ]
    if request.term is not None and not is_safe_term(request.term):
        refused.append(("pty-req", cap_text(request.term, MAX_NAME_BYTES)))
    return refused


class _Tap:
    """The pump's tap: session totals plus the channel's recorder."""

    def __init__(self, totals: SessionTotals, recorder: ChannelRecorder | None) -> None:
        self._totals = totals
        self._recorder = recorder

    def input(self, data: bytes) -> None:
        self._totals.count_in(len(data))
        if self._recorder is not None:
            self._recorder.input(data)

    def output(self, data: bytes, stream: int) -> None:
        self._totals.count_out(len(data))
        if self._recorder is not None:
            self._recorder.output(data, stream)

    def resize(self, width: int, height: int) -> None:
        if self._recorder is not None:
            self._recorder.resize(width, height)


def _recorder_for(
    request: ChannelRequest, peer: Peer, events: EventSink, recordings: Path | None
) -> ChannelRecorder | None:
    """Shells (with or without a PTY) and exec channels are recorded; subsystems (sftp) are not."""
    if recordings is None or request.kind == "subsystem":
        return None
    # The event keeps the size the client asked for; the cast and the commands use what bash draws.
    width, height = display_size(*(request.size or (0, 0)))
    commands: TerminalCommands | LineCommands | None = None
    if request.kind == "shell":
        commands = TerminalCommands(width, height) if request.has_pty else LineCommands()
    header = Header(
        width=width,
        height=height,
        timestamp=int(time.time()),
        title=f"{request.username} session {peer.session_id} channel {request.channel}",
        env={"TERM": cap_text(request.term or "", MAX_NAME_BYTES), "SHELL": "/bin/bash"},
    )
    return ChannelRecorder(
        cast_file(recordings, peer.session_id, request.channel, ev.utcnow()),
        header,
        events=events,
        peer=peer,
        channel=request.channel,
        record_input=request.kind == "shell",
        commands=commands,
    )


def _request_event(request: ChannelRequest, peer: Peer, recording: str | None) -> ev.Event:
    if request.kind == "exec":
        return ev.SessionExec(
            peer=peer,
            channel=request.channel,
            input=cap_text(request.command or "", MAX_COMMAND_BYTES),
            pty=request.has_pty,
            recording=recording,
        )
    if request.kind == "subsystem":
        return ev.SessionSubsystem(
            peer=peer,
            channel=request.channel,
            name=cap_text(request.subsystem or "", MAX_NAME_BYTES),
        )
    size = request.size or (None, None)
    return ev.SessionShell(
        peer=peer,
        channel=request.channel,
        term=None if request.term is None else cap_text(request.term, MAX_NAME_BYTES),
        width=size[0],
        height=size[1],
        recording=recording,
    )


# How long a login's utmp record may take; it runs beside the shell, never delaying it.
LOGIN_RECORD_TIMEOUT_SECONDS = 10.0


async def _record_login(sandbox: Sandbox, username: str, peer: Peer) -> None:
    """sshd writes utmp, wtmp and lastlog for every session with a PTY (`w`, `who`, `last`)."""
    try:
        async with asyncio.timeout(LOGIN_RECORD_TIMEOUT_SECONDS):
            recorded = await sandbox.record_login(username, peer.src_ip)
    except (SandboxError, TimeoutError, ValueError) as exc:
        log.warning("session %s: login not recorded in utmp: %s", peer.session_id, exc)
        return
    except Exception:  # the channel must not end because of its utmp line
        log.exception("session %s: recording the login in utmp failed", peer.session_id)
        return
    if not recorded:
        log.info("session %s: no PTY login found to record in utmp", peer.session_id)


async def run_channel(
    request: ChannelRequest,
    io: ChannelIO,
    lease: SandboxLease,
    events: EventSink,
    peer: Peer,
    persona: Persona,
    *,
    recordings: Path | None = None,
    totals: SessionTotals | None = None,
) -> None:
    """Serve one session channel from request to close: acquire, exec, pump, report, finish.

    `recordings` is the root of the cast files (None: no recording); `totals` accumulates the
    connection's bytes and last exit status.

    Raises:
        AllocationFailed: no sandbox; the caller closes the connection.
    Cancellation: the process stream is closed (shielded), the recording is flushed and closed,
    and the channel is left to the caller.
    """
    totals = totals if totals is not None else SessionTotals()
    recorder = _recorder_for(request, peer, events, recordings)
    path = str(recorder.path) if recorder is not None and recorder.path is not None else None
    events.emit(_request_event(request, peer, path))
    for name, value in list(request.env.items())[:MAX_ENV_EVENTS]:
        events.emit(
            ev.SessionEnv(
                peer=peer,
                channel=request.channel,
                name=cap_text(name, MAX_NAME_BYTES),
                value=cap_text(value, MAX_ENV_VALUE_BYTES),
            )
        )
    for kind, detail in refused_settings(request, persona):
        events.emit(ev.RequestRefused(peer=peer, request=kind, detail=detail))
    started = time.monotonic()
    sandbox, home = await lease.acquire(request.username)
    plan = plan_exec(request, persona)
    status: int | None = None
    bytes_in = bytes_out = 0

    def resized(size: Resize) -> None:
        events.emit(
            ev.SessionResize(
                peer=peer, channel=request.channel, width=size.width, height=size.height
            )
        )

    try:
        async with recorder if recorder is not None else contextlib.nullcontext():
            stream = await sandbox.exec(
                plan.argv,
                user=request.username,
                tty=plan.tty,
                env=plan.env,
                workdir=home,
                size=request.size if plan.tty else None,
            )
            try:
                # The login record never raises, so what leaves this group is the pump's alone.
                try:
                    async with asyncio.TaskGroup() as tasks:
                        record = (
                            tasks.create_task(_record_login(sandbox, request.username, peer))
                            if plan.tty
                            else None
                        )
                        result = await pump(
                            stream, io, on_resize=resized, tap=_Tap(totals, recorder), tty=plan.tty
                        )
                        if record is not None:
                            record.cancel()  # a process that is gone needs no utmp line
                except BaseExceptionGroup as group:
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            finally:
                await asyncio.shield(stream.close())
        status, bytes_in, bytes_out = result.exit_status, result.bytes_in, result.bytes_out
        if status is not None:
            totals.exit_status = status
    except* SandboxError as group:
        log.warning(
            "session %s channel %d: sandbox failed: %s",
            peer.session_id,
            request.channel,
            group.exceptions[0],
        )
        events.emit(
            ev.SandboxFailure(
                peer=peer,
                operation="exec",
                error=str(group.exceptions[0]),
                container_id=sandbox.id,
            )
        )
    events.emit(
        ev.ChannelClosed(
            peer=peer,
            channel=request.channel,
            exit_status=status,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            duration=round(time.monotonic() - started, 3),
        )
    )
    await io.finish(status)


__all__ = [
    "ChannelRequest",
    "ExecPlan",
    "plan_exec",
    "refused_settings",
    "run_channel",
]
