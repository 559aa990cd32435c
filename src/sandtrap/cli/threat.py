"""`sandtrap artifacts list|show`, `techniques`, `clusters`, `anomalies` (issue 19).

Command line only: queries are sandtrap.analysis.threatquery's, tables
sandtrap.analysis.threatrender's.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sandtrap.cli._common import config_option, load, open_index, query, since_bound


@click.group()
def artifacts() -> None:
    """Files sessions left behind (var/artifacts/<sha256>) and their triage."""


@artifacts.command("list")
@config_option
@click.option(
    "--since", default=None, help="Only artifacts seen since: 30m, 1h, 7d or an ISO time."
)
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def artifacts_list(config_path: Path | None, since: str | None, limit: int, as_json: bool) -> None:
    """Captured files by sha256, most recently seen first, with type, architecture and YARA."""
    from sandtrap.analysis.render import print_view
    from sandtrap.analysis.threatquery import list_artifacts
    from sandtrap.analysis.threatrender import artifacts_table

    db = open_index(load(config_path))
    rows = list_artifacts(db, since_bound(since), limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=True))
        return
    print_view(artifacts_table(rows))


@artifacts.command("show")
@config_option
@click.argument("sha256")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def artifacts_show(config_path: Path | None, sha256: str, as_json: bool) -> None:
    """One artifact (sha256 or a unique prefix): hashes, type, indicators, YARA, where seen."""
    from sandtrap.analysis.render import print_view
    from sandtrap.analysis.threatquery import artifact_detail, resolve_artifact
    from sandtrap.analysis.threatrender import artifact_view

    db = open_index(load(config_path))
    detail = query(lambda: artifact_detail(db, resolve_artifact(db, sha256)))
    if as_json:
        click.echo(json.dumps(detail, ensure_ascii=True))
        return
    print_view(artifact_view(detail))


@click.command()
@config_option
@click.option("--since", default=None, help="Only since: 30m, 1h, 7d or an ISO time.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def techniques(config_path: Path | None, since: str | None, limit: int, as_json: bool) -> None:
    """MITRE ATT&CK techniques sessions showed (session.attack), by number of sessions."""
    from sandtrap.analysis.render import print_view
    from sandtrap.analysis.threatquery import technique_counts
    from sandtrap.analysis.threatrender import techniques_table

    rows = technique_counts(open_index(load(config_path)), since_bound(since), limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=True))
        return
    print_view(techniques_table(rows))


@click.command()
@config_option
@click.option("--since", default=None, help="Only sessions since: 30m, 1h, 7d or an ISO time.")
@click.option("--min-size", default=2, show_default=True, type=click.IntRange(2))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def clusters(
    config_path: Path | None, since: str | None, min_size: int, limit: int, as_json: bool
) -> None:
    """Sessions grouped as one attacker: similar command sequences, client and credentials,
    shared artifacts, keys or password lists; largest first, with what ties each."""
    from sandtrap.analysis.cluster import cluster_sessions
    from sandtrap.analysis.render import print_view
    from sandtrap.analysis.threatquery import cluster_record, session_traits
    from sandtrap.analysis.threatrender import clusters_table

    traits = session_traits(open_index(load(config_path)), since_bound(since))
    records = [cluster_record(c) for c in cluster_sessions(traits, min_size)[:limit]]
    if as_json:
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=True))
        return
    print_view(clusters_table(records))


@click.command()
@config_option
@click.option("--since", default=None, help="Only since: 30m, 1h, 7d or an ISO time.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def anomalies(config_path: Path | None, since: str | None, limit: int, as_json: bool) -> None:
    """Sessions scored as anomalies (session.anomaly), highest score first."""
    from sandtrap.analysis.render import print_view
    from sandtrap.analysis.threatquery import list_anomalies
    from sandtrap.analysis.threatrender import anomalies_table

    rows = list_anomalies(open_index(load(config_path)), since_bound(since), limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=True))
        return
    print_view(anomalies_table(rows))


__all__ = ["anomalies", "artifacts", "clusters", "techniques"]
