"""Enrichment of live events: GeoIP country and ASN of each source (operator-provided MaxMind
databases, read offline, cached) and ATT&CK techniques (rules: analysis/attack.py).

`Enricher.offer` is an event-log listener: on `session.connect` it emits `session.geo`, on
commands, diffs, triage results and logins it emits `session.attack` once per session and
technique. A lookup in a memory-mapped database takes microseconds, so it runs on the loop.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandtrap.analysis.attack import tag
from sandtrap.config import AnalysisConfig
from sandtrap.events import (
    AuthFailed,
    Event,
    EventSink,
    SessionAttack,
    SessionConnect,
    SessionEvent,
    SessionGeo,
    to_record,
)

log = logging.getLogger(__name__)

# Sessions whose techniques are remembered (triage results arrive after the session closed).
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class GeoInfo:
    country: str | None = None
    country_name: str | None = None
    asn: int | None = None
    as_org: str | None = None

    def is_empty(self) -> bool:
        return self == GeoInfo()


def _open(path: Path | None) -> Any:
    if path is None:
        return None
    import maxminddb

    try:
        return maxminddb.open_database(str(path), maxminddb.MODE_MMAP)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        log.warning("GeoIP database %s not usable: %s", path, exc)
        return None


class GeoIP:
    """Country and ASN lookups from MaxMind-format files (GeoLite2/GeoIP2 Country or City, ASN).

    Either file may be missing; results (misses too) are cached per address, least recently used
    forgotten first. Without the `maxminddb` package no database opens and lookups are empty.
    """

    def __init__(
        self, country_db: Path | None, asn_db: Path | None, cache_size: int = 10_000
    ) -> None:
        try:
            self._country = _open(country_db)
            self._asn = _open(asn_db)
        except ImportError:
            log.warning("GeoIP databases configured but maxminddb is not installed")
            self._country = self._asn = None
        self._cache: OrderedDict[str, GeoInfo] = OrderedDict()
        self._cache_size = cache_size
        self.lookups = 0

    @property
    def enabled(self) -> bool:
        return self._country is not None or self._asn is not None

    def lookup(self, address: str) -> GeoInfo:
        cached = self._cache.get(address)
        if cached is not None:
            self._cache.move_to_end(address)
            return cached
        info = self._lookup(address)
        self._cache[address] = info
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return info

    def _lookup(self, address: str) -> GeoInfo:
        self.lookups += 1
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return GeoInfo()
        country = country_name = as_org = None
        asn = None
        if self._country is not None:
            record = self._country.get(address) or {}
            place = record.get("country") or record.get("registered_country") or {}
            country = place.get("iso_code")
            country_name = (place.get("names") or {}).get("en")
        if self._asn is not None:
            record = self._asn.get(address) or {}
            asn = record.get("autonomous_system_number")
            as_org = record.get("autonomous_system_organization")
        return GeoInfo(
            country=str(country) if country else None,
            country_name=str(country_name) if country_name else None,
            asn=int(asn) if isinstance(asn, int) else None,
            as_org=str(as_org) if as_org else None,
        )

    def close(self) -> None:
        for reader in (self._country, self._asn):
            if reader is not None:
                reader.close()


class Enricher:
    """The event-log listener that adds `session.geo` and `session.attack` events."""

    def __init__(self, config: AnalysisConfig, events: EventSink) -> None:
        self._events = events
        self._attack = config.attack_tags
        self.geoip = GeoIP(config.geoip_country_db, config.geoip_asn_db, config.geoip_cache_size)
        self._seen: OrderedDict[str, set[str]] = OrderedDict()
        self._failures: dict[str, int] = {}

    def offer(self, event: Event) -> None:
        if not isinstance(event, SessionEvent) or isinstance(event, SessionGeo | SessionAttack):
            return
        if isinstance(event, SessionConnect) and self.geoip.enabled:
            info = self.geoip.lookup(event.peer.src_ip)
            self._events.emit(
                SessionGeo(
                    peer=event.peer,
                    country=info.country,
                    country_name=info.country_name,
                    asn=info.asn,
                    as_org=info.as_org,
                )
            )
        if not self._attack:
            return
        session = event.peer.session_id
        if isinstance(event, AuthFailed):
            self._failures[session] = self._failures.get(session, 0) + 1
            while len(self._failures) > MAX_SESSIONS:
                self._failures.pop(next(iter(self._failures)))
            return
        record = to_record(event, "")
        tags = tag(record, self._failures.get(session, 0))
        if not tags:
            return
        seen = self._seen.setdefault(session, set())
        self._seen.move_to_end(session)
        while len(self._seen) > MAX_SESSIONS:
            self._seen.popitem(last=False)
        for found in tags:
            if found.technique.id in seen:
                continue
            seen.add(found.technique.id)
            self._events.emit(
                SessionAttack(
                    peer=event.peer,
                    technique=found.technique.id,
                    name=found.technique.name,
                    tactic=found.technique.tactic,
                    evidence=found.evidence,
                    source=found.source,
                )
            )


__all__ = ["Enricher", "GeoIP", "GeoInfo"]
