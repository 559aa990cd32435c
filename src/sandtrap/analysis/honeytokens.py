"""The honeytoken registry and watch: which values were planted for which sandbox and session,
and `honeytoken.triggered` when one comes back (issue 19).

Owns the registry (from `honeytoken.planted` events, live and from the index at start), the
sandbox -> session link (`sandbox.allocated`), matching SSH passwords and public keys, and
scanning the sinkhole's `network.*` events for token values. Keys are also handed to the auth
policy, so a planted private key logs in. Planting is sandbox/honeytokens.py's.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandtrap.events import (
    AuthFailed,
    AuthSuccess,
    Event,
    EventSink,
    HoneytokensPlanted,
    HoneytokenTriggered,
    SandboxAllocated,
    SessionEvent,
    to_record,
)

log = logging.getLogger(__name__)

MAX_TOKENS = 500_000
# Values searched for in network events: long enough never to occur by chance.
MIN_SCAN_CHARS = 12
MAX_SCAN_TEXT = 64 * 1024
# The characters tokens are made of (sandbox/honeytokens.py): words of them are candidates.
_WORD = re.compile(r"[A-Za-z0-9+/_!]{12,}")
SCANNED_KINDS = ("aws_access_key_id", "aws_secret_access_key", "git_credentials", "env_password")


@dataclass(frozen=True)
class _Planted:
    kind: str
    path: str
    container_id: str


class HoneytokenWatch:
    """The event-log listener; `accept_key` is called with each planted key's fingerprint."""

    def __init__(self, events: EventSink, accept_key: Callable[[str], None]) -> None:
        self._events = events
        self._accept_key = accept_key
        self._values: dict[str, _Planted] = {}
        self._scanned: dict[str, _Planted] = {}
        self._keys: dict[str, _Planted] = {}
        self._sessions: dict[str, str] = {}  # container -> session it was allocated to

    def register(self, container_id: str, tokens: list[dict[str, Any]]) -> None:
        for token in tokens:
            if len(self._values) + len(self._keys) >= MAX_TOKENS:
                log.warning("honeytoken registry full: new tokens are not watched")
                return
            planted = _Planted(str(token.get("kind")), str(token.get("path")), container_id)
            fingerprint = token.get("fingerprint")
            if isinstance(fingerprint, str) and fingerprint:
                self._keys[fingerprint] = planted
                self._accept_key(fingerprint)
            elif isinstance(token.get("value"), str):
                value = str(token["value"])
                self._values[value] = planted
                if planted.kind in SCANNED_KINDS and len(value) >= MIN_SCAN_CHARS:
                    self._scanned[value.lower()] = planted

    def load(self, index_db: Path) -> int:
        """Register the tokens the index knows (planted before this start); returns how many."""
        if not index_db.exists():
            return 0
        db = sqlite3.connect(f"file:{index_db}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute(
                "SELECT container_id, kind, path, value, fingerprint FROM honeytokens"
            ).fetchall()
            links = db.execute(
                "SELECT container_id, session FROM sessions WHERE container_id IS NOT NULL"
            ).fetchall()
        except sqlite3.Error as exc:
            log.warning("cannot read honeytokens from %s: %s", index_db, exc)
            return 0
        finally:
            db.close()
        for container_id, kind, path, value, fingerprint in rows:
            self.register(
                str(container_id),
                [{"kind": kind, "path": path, "value": value, "fingerprint": fingerprint}],
            )
        for container_id, session in links:
            self._sessions.setdefault(str(container_id), str(session))
        return len(rows)

    def offer(self, event: Event) -> None:
        if isinstance(event, HoneytokensPlanted):
            self.register(event.container_id, event.tokens)
            return
        if not isinstance(event, SessionEvent) or isinstance(event, HoneytokenTriggered):
            return
        if isinstance(event, SandboxAllocated):
            self._sessions.setdefault(event.container_id, event.peer.session_id)
            return
        if isinstance(event, AuthFailed | AuthSuccess):
            if event.key_fingerprint and event.key_fingerprint in self._keys:
                self._trigger(event, self._keys[event.key_fingerprint], "publickey")
            elif event.password and event.password in self._values:
                self._trigger(event, self._values[event.password], "password")
            return
        if event.eventid.startswith("network."):
            self._scan(event)

    def _scan(self, event: SessionEvent) -> None:
        # Candidate words looked up, never a scan of every token; lowercased, as DNS names arrive.
        text = " ".join(str(v) for v in to_record(event, "").values() if isinstance(v, str))
        for word in _WORD.findall(text[:MAX_SCAN_TEXT]):
            planted = self._scanned.get(word.lower())
            if planted is not None:
                self._trigger(event, planted, event.eventid)
                return

    def _trigger(self, event: SessionEvent, planted: _Planted, via: str) -> None:
        planted_session = self._sessions.get(planted.container_id)
        log.warning(
            "session %s: honeytoken %s from session %s used (%s)",
            event.peer.session_id,
            planted.kind,
            planted_session,
            via,
        )
        self._events.emit(
            HoneytokenTriggered(
                peer=event.peer,
                kind=planted.kind,
                path=planted.path,
                via=via,
                planted_container=planted.container_id,
                planted_session=planted_session,
            )
        )


__all__ = ["HoneytokenWatch"]
