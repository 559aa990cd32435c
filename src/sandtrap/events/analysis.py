"""The threat-analysis events (issue 19): one frozen dataclass per eventid, like catalogue.py,
which merges `ANALYSIS_EVENTS` into `CATALOGUE`; docs/events.md documents each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sandtrap.events.base import Event, SessionEvent


@dataclass(frozen=True, kw_only=True)
class ArtifactAnalysed(SessionEvent):
    """Triage of an artifact the session left (analysis/triage.py); null fields: not computed."""

    eventid: ClassVar[str] = "artifact.analysed"
    sha256: str
    size: int
    path: str | None = None
    md5: str | None = None
    sha1: str | None = None
    magic: str | None = None
    mime: str | None = None
    ssdeep: str | None = None
    tlsh: str | None = None
    elf_arch: str | None = None
    yara: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class SessionGeo(SessionEvent):
    """Country and autonomous system of the session's source, from the configured GeoIP files."""

    eventid: ClassVar[str] = "session.geo"
    country: str | None = None
    country_name: str | None = None
    asn: int | None = None
    as_org: str | None = None


@dataclass(frozen=True, kw_only=True)
class SessionAttack(SessionEvent):
    """A MITRE ATT&CK technique the session showed (first time per session; analysis/attack.py)."""

    eventid: ClassVar[str] = "session.attack"
    technique: str
    name: str
    tactic: str
    evidence: str
    source: str


@dataclass(frozen=True, kw_only=True)
class SessionAnomaly(SessionEvent):
    """A closed session among the strangest of this sensor's history (analysis/anomaly.py)."""

    eventid: ClassVar[str] = "session.anomaly"
    score: float
    threshold: float
    percentile: float
    history: int
    features: dict[str, float | int]


@dataclass(frozen=True, kw_only=True)
class HoneytokensPlanted(Event):
    """Decoy credentials written into a warm sandbox (sandbox/honeytokens.py): the registry."""

    eventid: ClassVar[str] = "honeytoken.planted"
    container_id: str
    hostname: str
    tokens: list[dict[str, str | None]]


@dataclass(frozen=True, kw_only=True)
class HoneytokenTriggered(SessionEvent):
    """A planted value was used: this session presented a token another session was given."""

    eventid: ClassVar[str] = "honeytoken.triggered"
    kind: str
    path: str
    via: str
    planted_container: str
    planted_session: str | None = None


ANALYSIS_EVENTS: tuple[type[Event], ...] = (
    HoneytokensPlanted,
    HoneytokenTriggered,
    ArtifactAnalysed,
    SessionGeo,
    SessionAttack,
    SessionAnomaly,
)

__all__ = [
    "ANALYSIS_EVENTS",
    "ArtifactAnalysed",
    "HoneytokenTriggered",
    "HoneytokensPlanted",
    "SessionAnomaly",
    "SessionAttack",
    "SessionGeo",
]
