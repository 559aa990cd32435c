"""A sandbox container over any `ContainerEngine`: the object the pool hands to sessions.

Owns the login user's creation (one exec, reporting what it changed for the session diff) and the
set of open execs, so a sandbox found dead can end them. Engine I/O is left to the engine.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

from sandtrap.errors import EngineError
from sandtrap.sandbox.agent import AgentLink, AgentUnavailable
from sandtrap.sandbox.engine import ContainerEngine, EngineStream
from sandtrap.sandbox.hardening import is_valid_username
from sandtrap.sandbox.realism import login_record_argv

# $1 is a validated user name. useradd's own files, the new home (with the skeleton) and the
# directories whose entries change; the first output line is the passwd entry.
ENSURE_USER_SCRIPT = r"""
getent passwd "$1" >/dev/null || useradd --create-home --shell /bin/bash -- "$1" || exit 1
getent passwd "$1"
home=$(getent passwd "$1" | cut -d: -f6)
for f in /etc/passwd /etc/shadow /etc/group /etc/gshadow /etc/subuid /etc/subgid; do
  set -- "$@" "$f" "$f-"
done
find "$@" /etc /home /var/mail /var/log/lastlog /var/log/faillog -maxdepth 0 \
  -printf '%p\t%s\t%T@\n' 2>/dev/null
[ -d "$home" ] && [ "$home" != / ] && find "$home" -xdev -printf '%p\t%s\t%T@\n' 2>/dev/null
exit 0
"""


class ContainerSandbox:
    """One sandbox container (see `sandbox/base.py` for the protocol)."""

    def __init__(
        self, engine: ContainerEngine, container_id: str, hostname: str, image: str
    ) -> None:
        self._engine = engine
        self._id = container_id
        self._hostname = hostname
        self._image = image
        self.name = ""
        self.users: dict[str, str] = {}
        # Paths changed by our own preparation, as (size, mtime), so the session diff leaves
        # them out unless the attacker changed them again.
        self.baseline: dict[str, tuple[int, int] | None] = {}
        # Open execs, so a sandbox found dead can end them (gVisor leaves them hanging).
        self._streams: weakref.WeakSet[EngineStream] = weakref.WeakSet()
        # The in-sandbox agent (`sandbox.agent`), when the maker started one: channels are its
        # children; None or lost, they are docker execs.
        self.agent: AgentLink | None = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def hostname(self) -> str:
        return self._hostname

    @property
    def image(self) -> str:
        return self._image

    async def ensure_user(self, username: str) -> str:
        if username in self.users:
            return self.users[username]
        if not is_valid_username(username):
            raise EngineError(f"login name {username!r} is not a valid user name")
        # One exec: create the account when missing, then report the passwd entry and the size and
        # mtime of every path useradd touches, so the session diff can leave our doing out.
        status, out, err = await self._engine.run(
            self._id, ["/bin/sh", "-c", ENSURE_USER_SCRIPT, "sh", username]
        )
        if status != 0:
            raise EngineError(f"cannot create user {username!r}: {err[-200:]!r}")
        entry, _, listing = out.decode("utf-8", "replace").partition("\n")
        fields = entry.strip().split(":")
        home = fields[5] if len(fields) > 5 and fields[5] else "/"
        for line in listing.splitlines():
            path, tab, rest = line.partition("\t")
            size, _, mtime = rest.partition("\t")
            if tab and size.isdigit():
                self.baseline[path] = (int(size), int(float(mtime or 0)))
        self.users[username] = home
        return home

    async def record_login(self, username: str, src_ip: str) -> bool:
        if not is_valid_username(username):
            return False
        status, out, _ = await self._engine.run(self._id, login_record_argv(username, src_ip))
        if status != 0:
            return False
        for line in out.decode("utf-8", "replace").splitlines():
            path, tab, rest = line.partition("\t")
            size, _, mtime = rest.partition("\t")
            if tab and size.isdigit():
                self.baseline[path] = (int(size), int(float(mtime or 0)))
        return True

    async def exec(
        self,
        argv: Sequence[str],
        *,
        user: str,
        tty: bool,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> EngineStream:
        if self.agent is not None and self.agent.is_alive:
            try:
                channel = await self.agent.open(
                    argv, user=user, tty=tty, env=env, workdir=workdir, size=size
                )
            except AgentUnavailable:
                pass  # logged by the link when it is the agent's fault; docker exec instead
            else:
                self._streams.add(channel)
                return channel
        stream = await self._engine.exec(
            self._id, argv, user=user, tty=tty, env=env, workdir=workdir, size=size
        )
        self._streams.add(stream)
        return stream

    def abort(self) -> None:
        """End every open exec: their readers see end of stream, so their sessions close."""
        for stream in list(self._streams):
            stream.abort()
        self.close_agent()

    def close_agent(self) -> None:
        """Drop the agent's stream (the sandbox is being stopped or removed); idempotent."""
        if self.agent is not None:
            self.agent.close()
