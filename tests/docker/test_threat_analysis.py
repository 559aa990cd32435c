"""Threat analysis on the real service (real engine, real clients), issue 19.

Public keys: OpenSSH `ssh -i` (hostbound requests) and asyncssh clients log in with keys the
policy accepts, and a key planted in authorized_keys is flagged in the session's `sandbox.diff`.
Triage: files uploaded with scp are captured, triaged off the loop (`artifact.analysed`) and
listed by `sandtrap artifacts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers, service_config
from tests.unit.test_enrich import write_dbs
from tests.unit.test_triage import SAMPLES

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

KEY_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "PasswordAuthentication=no",
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    path = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op@c2", "-f", str(path)], check=True
    )
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True)
    planted = asyncssh.generate_private_key("ssh-rsa", key_size=2048, comment="mdrfckr")
    return {
        "path": path,
        "line": Path(f"{path}.pub").read_text().strip(),
        "fingerprint": listed.stdout.split()[1],
        "planted": planted,
    }


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]
) -> Iterator[RunningService]:
    folder = tmp_path_factory.mktemp("threat")
    country_db, asn_db = write_dbs(folder)
    config = service_config(
        folder / "var",
        auth={"accepted_key_fingerprints": [keys["fingerprint"]], "accept_keys_after_offers": 2},
        pool={"size": 1},
        analysis={
            "geoip_country_db": str(country_db),
            "geoip_asn_db": str(asn_db),
            # A small history (this module's sessions), refitted after each session.
            "anomaly_min_history": 8,
            "anomaly_refit_every": 1,
            "anomaly_percentile": 90.0,
        },
    )
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


def _wait(
    service: RunningService, eventid: str, session: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = service.events(eventid, session=session)
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {eventid} for {session}")


def test_openssh_key_login_and_planted_key_flagged(
    service: RunningService, keys: dict[str, Any]
) -> None:
    planted_line = keys["planted"].export_public_key().decode().strip()
    command = (
        "mkdir -p ~/.ssh && chmod 700 ~/.ssh && "
        f"echo 'no-pty {planted_line}' >> ~/.ssh/authorized_keys && echo planted"
    )
    argv = ["ssh", "-v", "-p", str(service.port), *KEY_OPTS, "-i", str(keys["path"])]
    result = subprocess.run(
        [*argv, "root@127.0.0.1", command], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "planted\n"
    (success,) = [
        e for e in service.events("auth.success") if e["key_fingerprint"] == keys["fingerprint"]
    ]
    assert success["method"] == "publickey"
    assert success["key_type"] == "ssh-ed25519"
    assert success["key"] == " ".join(keys["line"].split()[:2])
    assert success["reason"] == "listed key"
    diff = _wait(service, "sandbox.diff", success["session"])
    flagged = [c for c in diff["changes"] if c.get("flag") == "authorized_keys"]
    assert [c["path"] for c in flagged] == ["/root/.ssh/authorized_keys"]
    (entry,) = diff["authorized_keys"]
    assert entry["path"] == "/root/.ssh/authorized_keys"
    assert entry["key_type"] == "ssh-rsa"
    assert entry["key_fingerprint"] == keys["planted"].get_fingerprint("sha256")
    assert entry["comment"] == "mdrfckr"


def test_asyncssh_second_key_accepted_and_recorded(service: RunningService) -> None:
    first = asyncssh.generate_private_key("ssh-ed25519")
    second = asyncssh.generate_private_key("ecdsa-sha2-nistp256")

    async def login() -> str:
        async with asyncssh.connect(
            "127.0.0.1",
            service.port,
            username="root",
            known_hosts=None,
            client_keys=[first, second],
            password=None,
            agent_path=None,
        ) as conn:
            return str((await conn.run("id -un", check=True)).stdout)

    assert asyncio.run(asyncio.wait_for(login(), 90)) == "root\n"
    offered = {first.get_fingerprint("sha256"), second.get_fingerprint("sha256")}
    records = [
        e
        for e in service.events("auth.failed") + service.events("auth.success")
        if e.get("key_fingerprint") in offered
    ]
    assert {(e["eventid"], e["key_type"], e["reason"]) for e in records} == {
        ("auth.failed", "ssh-ed25519", "public key refused"),
        ("auth.success", "ecdsa-sha2-nistp256", "accept_keys_after_offers"),
    }
    assert all(e["key"].startswith(e["key_type"] + " AAAA") for e in records)


def _cli(service: RunningService, *args: str) -> str:
    config = service.config.storage.data_dir.parent / "cli.yaml"
    config.write_text(f"storage:\n  data_dir: {service.config.storage.data_dir}\n")
    result = subprocess.run(
        [sys.executable, "-m", "sandtrap", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_scp_upload_triaged_and_listed(service: RunningService, tmp_path: Path) -> None:
    sample = tmp_path / "x86"
    sample.write_bytes(SAMPLES["SandTrap_Mirai_Like"])
    script = tmp_path / "bins.sh"
    script.write_bytes(SAMPLES["SandTrap_Shell_Dropper"])
    argv = ["sshpass", "-p", "123456", "scp", "-O", "-P", str(service.port), *SSH_OPTS]
    result = subprocess.run(
        [*argv, str(sample), str(script), "root@127.0.0.1:/tmp/"],
        capture_output=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(sample.read_bytes()).hexdigest()
    deadline = time.monotonic() + 90
    analysed: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(analysed) < 2:
        analysed = [e for e in service.events("artifact.analysed") if e["path"].startswith("/tmp/")]
        time.sleep(0.3)
    by_path = {e["path"]: e for e in analysed}
    elf = by_path["/tmp/x86"]
    assert elf["sha256"] == digest
    assert elf["elf_arch"] == "mips-32-be"
    assert elf["magic"].startswith("ELF 32-bit MSB executable, MIPS")
    assert elf["yara"] == ["SandTrap_Mirai_Like"]
    assert elf["ssdeep"] and elf["md5"] and elf["sha1"]
    dropper = by_path["/tmp/bins.sh"]
    assert dropper["yara"] == ["SandTrap_Shell_Dropper"]
    assert dropper["urls"] == ["http://198.51.100.7/bins/x86"]
    _cli(service, "index", "rebuild")
    rows = [json.loads(line) for line in _cli(service, "artifacts", "list", "--json").splitlines()]
    listed = {row["sha256"]: row for row in rows}
    assert listed[digest]["yara"] == ["SandTrap_Mirai_Like"]
    assert listed[digest]["path"] == "/tmp/x86"
    shown = json.loads(_cli(service, "artifacts", "show", digest[:12], "--json"))
    assert shown["analysis"]["elf_arch"] == "mips-32-be"
    assert [s["session"] for s in shown["seen"]] == [elf["session"]]
    table = _cli(service, "artifacts", "list")
    assert "SandTrap_Mirai_Like" in table and digest[:16] in table


def _bundle_analysis(service: RunningService, session: str, tmp_path: Path) -> dict[str, Any]:
    output = tmp_path / f"{session}.tar.gz"
    _cli(service, "export", session, "-o", str(output), "--no-engine")
    with tarfile.open(output) as archive:
        member = archive.extractfile(f"{session}/analysis.json")
        assert member is not None
        return dict(json.loads(member.read()))


def test_export_bundle_carries_the_analysis(
    service: RunningService, keys: dict[str, Any], tmp_path: Path
) -> None:
    (success,) = [
        e for e in service.events("auth.success") if e.get("key_fingerprint") == keys["fingerprint"]
    ]
    analysis = _bundle_analysis(service, success["session"], tmp_path)
    assert [(k["key_fingerprint"], k["accepted"]) for k in analysis["public_keys"]] == [
        (keys["fingerprint"], True)
    ]
    assert [k["comment"] for k in analysis["authorized_keys"]] == ["mdrfckr"]
    assert analysis["geo"]["country"] == "ZZ"
    assert "T1098.004" in {t["technique"] for t in analysis["attack"]}
    (elf,) = [e for e in service.events("artifact.analysed") if e["path"] == "/tmp/x86"]
    analysis = _bundle_analysis(service, elf["session"], tmp_path)
    # The attacker's files; the image's own rsyslogd may also have written /var/log/syslog
    # during the session (a changed file, captured too, with no hit): not the bot's.
    dropped = {a["path"]: a["yara"] for a in analysis["artifacts"] if a["path"].startswith("/tmp/")}
    assert dropped == {
        "/tmp/x86": ["SandTrap_Mirai_Like"],
        "/tmp/bins.sh": ["SandTrap_Shell_Dropper"],
    }
    assert all(not a["yara"] for a in analysis["artifacts"] if a["path"] not in dropped)


def test_geo_and_attack_techniques_of_a_real_session(service: RunningService) -> None:
    result = service.ssh("uname -a; wget -q -T 1 http://127.0.0.1:9/x.sh; crontab -l; true")
    assert result.returncode == 0, result.stderr
    (kex,) = [e for e in service.events("session.exec") if e["input"].startswith("uname -a; wget")]
    session = kex["session"]
    geo = _wait(service, "session.geo", session)
    assert (geo["country"], geo["country_name"]) == ("ZZ", "Loopback")
    assert (geo["asn"], geo["as_org"]) == (64496, "Example Hosting")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(service.events("session.attack", session)) < 3:
        time.sleep(0.2)
    tags = {e["technique"]: e for e in service.events("session.attack", session=session)}
    assert set(tags) == {"T1082", "T1105", "T1053.003"}
    assert tags["T1105"]["source"] == "session.exec"
    assert tags["T1105"]["tactic"] == "Command and Control"
    _cli(service, "index", "rebuild")
    rows = [json.loads(line) for line in _cli(service, "techniques", "--json").splitlines()]
    counted = {row["technique"]: row["sessions"] for row in rows}
    assert counted["T1053.003"] >= 1 and counted["T1105"] >= 1
    # The key-planting session earlier was tagged from its command and its diff.
    assert "T1098.004" in counted


def test_one_script_from_two_sessions_is_one_cluster(service: RunningService) -> None:
    script = "cd /tmp; echo fetch {h}/x86; echo id {n} > .id; cat .id; uname -m; echo done {n}"
    for host, n in (("http://198.51.100.7", 11), ("http://203.0.113.99:8080", 947)):
        result = service.ssh(script.format(h=host, n=n))
        assert result.returncode == 0, result.stderr
    execs = [
        e for e in service.events("session.exec") if e["input"].startswith("cd /tmp; echo fetch")
    ]
    sessions = {e["session"] for e in execs}
    assert len(sessions) == 2
    for session in sessions:
        _wait(service, "session.closed", session)
    _cli(service, "index", "rebuild")
    records = [json.loads(line) for line in _cli(service, "clusters", "--json").splitlines()]
    (cluster,) = [r for r in records if sessions <= {m["session"] for m in r["members"]}]
    assert "commands" in cluster["ties"]
    assert cluster["id"] in _cli(service, "clusters")


# Enough bot sessions that one of them made odd by a loaded machine (a slow login, a long
# diff) is above the 90th percentile alone: with 8 it set the threshold, and a small history's
# isolation scores saturate, so the strange session could only tie it (seen in two CI runs).
BOT_RUNS = 16


@pytest.fixture
def bot_history_service(tmp_path: Path) -> Iterator[RunningService]:
    """A service of its own: the history is only the test's bot sessions (the module's other
    sessions, uploads and key logins among them, are themselves outliers that would set the
    90th percentile as high as the strange session's score)."""
    config = service_config(
        tmp_path / "var",
        pool={"size": 1},
        analysis={
            "anomaly_min_history": BOT_RUNS,
            "anomaly_refit_every": 1,
            "anomaly_percentile": 90.0,
        },
    )
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


def test_strange_session_after_a_bot_history_is_an_anomaly(
    bot_history_service: RunningService,
) -> None:
    service = bot_history_service
    for n in range(BOT_RUNS):
        result = service.ssh(f"uname -a; echo run {n}")
        assert result.returncode == 0, result.stderr
    payload = os.urandom(3 * 1024 * 1024)
    strange = "; ".join(f"mkdir -p /tmp/w{n} && cp /bin/ls /tmp/w{n}/tool{n}" for n in range(12))
    result = service.ssh(strange + "; cat > /tmp/blob; wc -c < /tmp/blob", stdin=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(payload)).encode()
    (exec_event,) = [
        e for e in service.events("session.exec") if e["input"].startswith("mkdir -p /tmp/w0 ")
    ]
    anomaly = _wait(service, "session.anomaly", exec_event["session"])
    assert anomaly["score"] > anomaly["threshold"]
    assert anomaly["features"]["bytes_in"] >= len(payload)
    assert anomaly["features"]["artifacts"] >= 12
    # The usual bot sessions were not flagged.
    usual = {e["session"] for e in service.events("session.exec") if e["input"].startswith("uname")}
    assert not usual & {e["session"] for e in service.events("session.anomaly")}
    _cli(service, "index", "rebuild")
    rows = [json.loads(line) for line in _cli(service, "anomalies", "--json").splitlines()]
    assert exec_event["session"] in {row["session"] for row in rows}
