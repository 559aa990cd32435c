"""Our events as Cowrie's JSON records (its `cowrie.json`), for pipelines built for Cowrie.

Pure: `CowrieMapper.map` turns one record of ours into zero or more of Cowrie's, with the
`eventid`s, `message` texts and fields of Cowrie's docs/OUTPUT.rst (T-Pot's Logstash, ewsposter,
DShield and GreedyBear read these). It keeps a little per-session state (the listener address,
each channel's cast, whether files came by scp/sftp), bounded and dropped at `session.closed`.
Events Cowrie has no name for keep ours under `sandtrap.`. Writing the lines is jsonfile.py's.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandtrap.outputs.base import Record

PREFIX = "cowrie."
OWN_PREFIX = "sandtrap."
MAX_SESSIONS = 100_000  # state kept for sessions still open (oldest forgotten beyond this)

# The keys every Cowrie record carries (docs/OUTPUT.rst, "Shared Attributes").
COMMON = ("session", "src_ip", "src_port", "dst_ip", "dst_port", "protocol")
_OURS_ONLY = ("timestamp", "eventid", "sensor", *COMMON)


@dataclass
class _SessionState:
    dst_ip: str | None = None
    casts: dict[int, str] = field(default_factory=dict)
    upload: bool = False


class CowrieMapper:
    """Maps our records to Cowrie's, one sensor's stream in order (the runner's task only)."""

    def __init__(
        self,
        uuid: str | Callable[[], str],
        protocol: str = "ssh",
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        # A callable is asked once, at the first record (the hub reads the uuid file then).
        self._uuid = uuid
        self.protocol = protocol
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, _SessionState] = OrderedDict()

    @property
    def uuid(self) -> str:
        if callable(self._uuid):
            self._uuid = self._uuid()
        return self._uuid

    def _state(self, session: Any) -> _SessionState:
        if not isinstance(session, str):
            return _SessionState()
        state = self._sessions.get(session)
        if state is None:
            state = self._sessions[session] = _SessionState()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return state

    def map(self, record: Record) -> list[Record]:
        """Cowrie's records for one of ours (several for some, e.g. client.version + kex)."""
        eventid = str(record.get("eventid", ""))
        state = self._state(record.get("session"))
        if eventid == "session.connect":
            state.dst_ip = record.get("dst_ip")
        out = [self._finish(record, state, name, message, fields) for name, message, fields in
               self._translate(eventid, record, state)]  # fmt: skip
        if eventid == "session.closed" and isinstance(record.get("session"), str):
            self._sessions.pop(record["session"], None)
        return out

    def _finish(
        self, record: Record, state: _SessionState, name: str, message: str, fields: Record
    ) -> Record:
        result: Record = {
            "eventid": name,
            "timestamp": record.get("timestamp"),
            "session": record.get("session"),
            "src_ip": record.get("src_ip"),
            "src_port": record.get("src_port"),
            "dst_ip": state.dst_ip,
            "dst_port": record.get("dst_port"),
            "protocol": self.protocol,
        }
        result.update(fields)
        result["message"] = message
        result["sensor"] = record.get("sensor")
        result["uuid"] = self.uuid
        return result

    def _translate(
        self, eventid: str, r: Record, state: _SessionState
    ) -> list[tuple[str, str, Record]]:
        if eventid == "session.connect":
            return [
                (
                    "cowrie.session.connect",
                    f"New connection: {r.get('src_ip')}:{r.get('src_port')} "
                    f"({state.dst_ip}:{r.get('dst_port')}) [session: {r.get('session')}]",
                    {"proxy_ip": r.get("proxy_ip"), "proxy_port": r.get("proxy_port")},
                )
            ]
        if eventid == "session.client.kex":
            version = r.get("client_version")
            return [
                ("cowrie.client.version", f"Remote SSH version: {version}", {"version": version}),
                (
                    "cowrie.client.kex",
                    f"SSH client hassh fingerprint: {r.get('hassh')}",
                    {
                        "hassh": r.get("hassh"),
                        "hasshAlgorithms": r.get("hassh_algorithms"),
                        "kexAlgs": r.get("kex_algs"),
                        "keyAlgs": r.get("key_algs", []),
                        "encCS": r.get("enc_algs"),
                        "macCS": r.get("mac_algs"),
                        "compCS": r.get("comp_algs"),
                        "langCS": r.get("lang_algs", []),
                    },
                ),
            ]
        if eventid in ("auth.success", "auth.failed"):
            return _login(eventid == "auth.success", r)
        if eventid in ("session.exec", "session.command"):
            text = r.get("input")
            if eventid == "session.exec" and isinstance(text, str):
                state.upload = state.upload or _is_scp_upload(text)
            if eventid == "session.exec" and r.get("recording"):
                state.casts[int(r.get("channel") or 0)] = r["recording"]
            return [("cowrie.command.input", f"CMD: {text}", {"input": text})]
        if eventid in ("session.shell", "session.resize"):
            if eventid == "session.shell" and r.get("recording"):
                state.casts[int(r.get("channel") or 0)] = r["recording"]
            if r.get("width") is None or r.get("height") is None:
                return [_own(eventid, r)]
            w, h = r["width"], r["height"]
            return [("cowrie.client.size", f"Terminal Size: {w} {h}", {"width": w, "height": h})]
        if eventid == "session.env":
            name, value = r.get("name"), r.get("value")
            return [("cowrie.client.var", f"request_env: {name}={value}", _fields(r))]
        if eventid == "session.subsystem":
            state.upload = state.upload or r.get("name") == "sftp"
            return [_own(eventid, r)]
        if eventid == "session.forward.refused" and r.get("kind") == "local":
            fields = {
                "dst_ip": r.get("host"),
                "dst_port": r.get("port"),
                "orig_ip": r.get("origin_host"),
                "orig_port": r.get("origin_port"),
            }
            return [
                (
                    "cowrie.direct-tcpip.request",
                    f"direct-tcp connection request to {fields['dst_ip']}:{fields['dst_port']} "
                    f"from {fields['orig_ip']}:{fields['orig_port']}",
                    fields,
                )
            ]
        if eventid == "session.channel.closed":
            cast = state.casts.pop(int(r.get("channel") or 0), None)
            if cast is None:
                return [_own(eventid, r)]
            ms = round(float(r.get("duration") or 0) * 1000)
            fields = {
                "ttylog": cast,
                "size": int(r.get("bytes_in") or 0) + int(r.get("bytes_out") or 0),
                "duration_ms": ms,
                "channel": r.get("channel"),
                "exit_status": r.get("exit_status"),
            }
            return [
                ("cowrie.log.closed", f"Closing TTY Log: {cast} after {ms} milliseconds", fields)
            ]
        if eventid == "sandbox.artifact" or (r.get("sha256") and r.get("url")):
            return [_file(r, state.upload)]
        if eventid == "session.closed":
            seconds = float(r.get("duration") or 0)
            fields = {"duration": round(seconds, 6), "duration_ms": round(seconds * 1000)}
            fields.update((k, r.get(k)) for k in ("reason", "username", "bytes_in", "bytes_out"))
            return [
                ("cowrie.session.closed", f"Connection lost after {round(seconds)} seconds", fields)
            ]
        return [_own(eventid, r)]


def _fields(r: Record) -> Record:
    """Our event-specific fields (everything but the shared keys)."""
    return {k: v for k, v in r.items() if k not in _OURS_ONLY}


def _own(eventid: str, r: Record) -> tuple[str, str, Record]:
    return (OWN_PREFIX + eventid, eventid, _fields(r))


def _login(success: bool, r: Record) -> list[tuple[str, str, Record]]:
    name = "cowrie.login.success" if success else "cowrie.login.failed"
    outcome = "succeeded" if success else "failed"
    username = r.get("username")
    extra = {"method": r.get("method"), "reason": r.get("reason")}
    if r.get("method") == "publickey":
        key = {
            "username": username,
            "fingerprint": r.get("key_fingerprint"),
            "key": r.get("key"),
            "type": r.get("key_type"),
        }
        return [
            (
                "cowrie.client.fingerprint",
                f"public key attempt for user {username} of type {key['type']} "
                f"with fingerprint {key['fingerprint']}",
                key,
            ),
            (name, f"public key login attempt for [{username}] {outcome}", {**key, **extra}),
        ]
    password = r.get("password")
    if password is None:
        return [(name, f"login attempt [{username}] {outcome}", {"username": username, **extra})]
    return [
        (
            name,
            f"login attempt [{username}/{password}] {outcome}",
            {"username": username, "password": password, **extra},
        )
    ]


def _file(r: Record, upload: bool) -> tuple[str, str, Record]:
    """A captured file: Cowrie's file_upload when it came by scp/sftp, else file_download."""
    sha = r.get("sha256")
    outfile = r.get("artifact")
    dest = r.get("path")
    fields: Record = {"shasum": sha, "outfile": outfile, "destfile": dest, "size": r.get("size")}
    if r.get("url"):
        fields["url"] = r["url"]
    if upload and not r.get("url"):
        filename = posixpath.basename(str(dest or ""))
        fields["filename"] = filename
        return ("cowrie.session.file_upload", f'Uploaded file "{filename}" to {outfile}', fields)
    message = f"Downloaded URL ({fields.get('url')}) with SHA-256 {sha} to {outfile}"
    return ("cowrie.session.file_download", message, fields)


def _is_scp_upload(command: str) -> bool:
    """`scp -t` (the remote end of an upload), as scp sends it, options in any order."""
    words = command.split()
    return bool(words) and posixpath.basename(words[0]) == "scp" and "-t" in words[1:]


__all__ = ["COMMON", "MAX_SESSIONS", "CowrieMapper"]
