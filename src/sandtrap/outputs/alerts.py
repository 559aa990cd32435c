"""Real-time alerts: rules over event records, rate limited per rule, the rest in one digest.

Pure, clock injected: `AlertRules.evaluate` says which alerts one record raises (and counts the
ones over a rule's `max_per_interval`); `flush` gives one digest per rule whose interval ended
with suppressed matches, so an alert feed stays readable under a botnet's load. Where alerts go
is the hub's (outputs/hub.py). Attacker strings in alert texts are made safe (textsafe.py) and
cut short.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandtrap.outputconfig import AlertRule
from sandtrap.outputs.base import Alert, EventFilter, Record
from sandtrap.textsafe import safe_text

# Which eventids each kind of rule watches when the rule names none. The sinkhole (issue 16)
# writes network.*; honeytokens (issue 15) honeytoken.*.
DEFAULT_EVENTIDS: dict[str, tuple[str, ...]] = {
    "login_success": ("auth.success",),
    "artifact": ("sandbox.artifact", "network.*"),
    "network_callback": ("network.*",),
    "honeytoken": ("honeytoken.*", "*.honeytoken*"),
    "command": ("session.command", "session.exec"),
    "event": (),
}
SEVERITY = {"login_success": "notice", "command": "warning", "event": "warning"}
MAX_SOURCES = 1000  # distinct sources remembered per rule and interval (for digests)
MAX_ARTIFACTS = 100_000  # digests remembered to tell a new artifact from a known one
TEXT_LIMIT = 300


@dataclass
class _Window:
    started: float | None = None
    sent: int = 0
    suppressed: int = 0
    sources: set[str] = field(default_factory=set)


def _show(value: Any) -> str:
    return safe_text(str(value), TEXT_LIMIT) if value is not None else "-"


def describe(kind: str, record: Record) -> str:
    """One line for people about the record that raised a rule."""
    src = f"from {_show(record.get('src_ip'))} (session {_show(record.get('session'))})"
    if kind == "login_success":
        secret = record.get("password")
        if secret is None:
            secret = record.get("key_fingerprint")
        return f"login as {_show(record.get('username'))!s} / {_show(secret)} {src}"
    if kind == "command":
        return f"command {_show(record.get('input'))} {src}"
    if kind == "artifact":
        what = record.get("url") or record.get("path")
        return f"new file {_show(what)} sha256 {_show(record.get('sha256'))} {src}"
    detail = {
        k: v
        for k, v in record.items()
        if k not in ("timestamp", "sensor", "session", "src_ip", "src_port", "dst_port")
    }
    return f"{_show(record.get('eventid'))} {src}: {_show(json.dumps(detail, default=str))}"


class _Rule:
    def __init__(self, rule: AlertRule) -> None:
        self.config = rule
        self.filter = EventFilter(tuple(rule.eventids) or DEFAULT_EVENTIDS[rule.when])
        self.pattern = re.compile(rule.pattern) if rule.pattern else None
        self.window = _Window()

    def matches(self, record: Record, new_artifact: Callable[[str], bool]) -> bool:
        if not self.filter.matches(str(record.get("eventid", ""))):
            return False
        if self.config.when == "artifact":
            digest = record.get("sha256")
            if not isinstance(digest, str) or not new_artifact(digest):
                return False
        if self.pattern is None:
            return True
        subject = record.get("input") if self.config.when == "command" else None
        if not isinstance(subject, str):
            subject = json.dumps(record, default=str)
        return self.pattern.search(subject) is not None


class AlertRules:
    """The configured rules' state: windows, suppressed counts, the artifacts seen."""

    def __init__(self, rules: list[AlertRule], clock: Callable[[], float]) -> None:
        self._rules = [_Rule(rule) for rule in rules]
        self._clock = clock
        self._artifacts: OrderedDict[str, None] = OrderedDict()
        self._checked: set[str] = set()

    def _new_artifact(self, digest: str) -> bool:
        # Several rules may look at one record: the first look decides, the rest agree.
        if digest in self._checked:
            return True
        if digest in self._artifacts:
            return False
        self._artifacts[digest] = None
        self._checked.add(digest)
        while len(self._artifacts) > MAX_ARTIFACTS:
            self._artifacts.popitem(last=False)
        return True

    def evaluate(self, record: Record) -> list[tuple[str, Alert]]:
        """(output name, alert) for each rule the record raises within its rate limit."""
        now = self._clock()
        raised: list[tuple[str, Alert]] = []
        self._checked.clear()
        for rule in self._rules:
            if not rule.matches(record, self._new_artifact):
                continue
            window = rule.window
            if window.started is None:
                window.started = now
            if window.sent >= rule.config.max_per_interval:
                window.suppressed += 1
                source = record.get("src_ip")
                if isinstance(source, str) and len(window.sources) < MAX_SOURCES:
                    window.sources.add(source)
                continue
            window.sent += 1
            alert = Alert(
                rule=rule.config.name,
                text=f"[{rule.config.name}] {describe(rule.config.when, record)}",
                severity=SEVERITY.get(rule.config.when, "warning"),
                event=record,
            )
            raised.append((rule.config.output, alert))
        return raised

    def flush(self, *, final: bool = False) -> list[tuple[str, Alert]]:
        """Digests of the rules whose interval ended (all of them when `final`)."""
        now = self._clock()
        digests: list[tuple[str, Alert]] = []
        for rule in self._rules:
            window = rule.window
            if window.started is None:
                continue
            if not final and now - window.started < rule.config.interval_seconds:
                continue
            if window.suppressed:
                sources = len(window.sources)
                more = "+" if sources >= MAX_SOURCES else ""
                text = (
                    f"[{rule.config.name}] digest: {window.suppressed} more matches in "
                    f"{now - window.started:.0f} s from {sources}{more} sources "
                    f"(limit {rule.config.max_per_interval} per "
                    f"{rule.config.interval_seconds:g} s)"
                )
                alert = Alert(
                    rule=rule.config.name,
                    text=text,
                    severity=SEVERITY.get(rule.config.when, "warning"),
                    count=window.suppressed,
                    digest=True,
                )
                digests.append((rule.config.output, alert))
            rule.window = _Window()
        return digests


__all__ = ["DEFAULT_EVENTIDS", "AlertRules", "describe"]
