"""The syslog output against a real rsyslogd (Debian's `rsyslog`, installed by `make test-tools`).

rsyslogd runs in the foreground with its own config in a temporary directory: UDP and TCP inputs
on loopback ports and a Unix datagram socket, every message written with the fields rsyslog
parsed out of it, so the test sees our RFC 5424 messages as a real receiver does.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandtrap.config import parse_config
from sandtrap.events import AuthSuccess, Peer, SessionCommand
from sandtrap.outputs import Outputs

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
pytestmark = pytest.mark.skipif(
    not Path(RSYSLOGD).exists(), reason="rsyslog is not installed (make test-tools installs it)"
)
PEER = Peer("3f2a9c1b7d4e", "203.0.113.45", 51234, 22)
HOSTILE = "rm -rf / \x1b]0;pwned\x07\n<script>\u2028 ; echo 'x\" y"

CONF = """
global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
input(type="imuxsock" Socket="{sock}" UseSpecialParser="off" ParseHostname="on")
template(name="fields" type="list") {{
  property(name="inputname") constant(value="\\t")
  property(name="syslogfacility-text") constant(value="\\t")
  property(name="syslogseverity-text") constant(value="\\t")
  property(name="hostname") constant(value="\\t")
  property(name="app-name") constant(value="\\t")
  property(name="msgid") constant(value="\\t")
  property(name="timereported" dateFormat="rfc3339") constant(value="\\t")
  property(name="msg") constant(value="\\n")
}}
*.* action(type="omfile" file="{out}" template="fields")
"""


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Rsyslog:
    directory: Path
    udp: int
    tcp: int
    sock: Path
    out: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.directory / "rsyslog.conf"
        conf.write_text(
            CONF.format(
                dir=self.directory, udp=self.udp, tcp=self.tcp, sock=self.sock, out=self.out
            )
        )
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.directory / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=1).close()
            except OSError:
                assert self.process.poll() is None, "rsyslogd exited"
                time.sleep(0.1)
                continue
            if self.sock.exists():
                return
        raise AssertionError("rsyslogd did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [line.split("\t") for line in self.out.read_text().splitlines()]

    def wait_lines(self, count: int) -> list[list[str]]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = self.lines()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"rsyslog wrote {len(self.lines())} lines, wanted {count}")


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(
        tmp_path,
        _free_port(socket.SOCK_DGRAM),
        _free_port(socket.SOCK_STREAM),
        tmp_path / "log.sock",
        tmp_path / "out.log",
    )
    server.start()
    yield server
    server.stop()


def _outputs(tmp_path: Path, rsyslog: Rsyslog, **extra: object) -> Outputs:
    common = {"type": "syslog", "facility": "auth", **extra}
    config = parse_config(
        {
            "sensor": "honeypot-01",
            "storage": {"data_dir": str(tmp_path / "var")},
            "outputs": [
                {
                    **common,
                    "name": "udp",
                    "transport": "udp",
                    "address": f"127.0.0.1:{rsyslog.udp}",
                },
                {
                    **common,
                    "name": "tcp",
                    "transport": "tcp",
                    "address": f"127.0.0.1:{rsyslog.tcp}",
                },
                {**common, "name": "unix", "transport": "unix", "address": str(rsyslog.sock)},
            ],
        }
    )
    return Outputs(config)


async def _run(outputs: Outputs, events: list[object]) -> None:
    task = asyncio.create_task(outputs.run())
    for event in events:
        outputs.offer(event)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    outputs.stop()
    async with asyncio.timeout(15):
        await task


async def test_rfc5424_over_udp_tcp_and_unix_as_rsyslog_parses_it(
    tmp_path: Path, rsyslog: Rsyslog
) -> None:
    events = [
        AuthSuccess(peer=PEER, username="root", method="password", password="123456"),
        SessionCommand(peer=PEER, channel=0, input=HOSTILE),
    ]
    outputs = _outputs(tmp_path, rsyslog)
    await _run(outputs, events)
    lines = await asyncio.to_thread(rsyslog.wait_lines, 6)
    by_input: dict[str, list[list[str]]] = {}
    for fields in lines:
        assert len(fields) == 8, fields  # nothing of ours split rsyslog's line
        by_input.setdefault(fields[0], []).append(fields)
    assert set(by_input) == {"imudp", "imtcp", "imuxsock"}
    for name, got in by_input.items():
        login, command = sorted(got, key=lambda f: f[5])
        assert login[1:6] == ["auth", "notice", "honeypot-01", "sandtrap", "auth.success"], name
        assert command[1:6] == ["auth", "info", "honeypot-01", "sandtrap", "session.command"]
        record = json.loads(command[7].strip())
        assert record["input"] == HOSTILE and record["session"] == PEER.session_id
        assert json.loads(login[7].strip())["password"] == "123456"
        assert login[6].startswith(events[0].timestamp.strftime("%Y-%m-%dT%H:%M:%S"))
    assert all(s.delivered == 2 and s.dropped == 0 for s in outputs.statistics())


async def test_receiver_down_spools_then_replays_in_order(tmp_path: Path, rsyslog: Rsyslog) -> None:
    rsyslog.stop()
    config = parse_config(
        {
            "sensor": "honeypot-01",
            "storage": {"data_dir": str(tmp_path / "var")},
            "outputs": [
                {
                    "type": "syslog",
                    "transport": "tcp",
                    "address": f"127.0.0.1:{rsyslog.tcp}",
                    "retry_initial_seconds": 0.2,
                    "retry_max_seconds": 0.5,
                    "format": "cowrie",
                }
            ],
        }
    )
    outputs = Outputs(config)
    task = asyncio.create_task(outputs.run())
    for number in range(50):
        outputs.offer(SessionCommand(peer=PEER, channel=0, input=f"echo {number}"))
    spool = tmp_path / "var" / "spool" / "syslog.jsonl"
    async with asyncio.timeout(10):
        while outputs.statistics()[0].spooled < 50:
            await asyncio.sleep(0.05)
    assert spool.exists() and not outputs.statistics()[0].connected
    await asyncio.to_thread(rsyslog.start)
    async with asyncio.timeout(15):
        while outputs.statistics()[0].delivered < 50:
            await asyncio.sleep(0.05)
    outputs.stop()
    await task
    lines = await asyncio.to_thread(rsyslog.wait_lines, 50)
    inputs = [json.loads(fields[7].strip())["input"] for fields in lines]
    assert inputs == [f"echo {number}" for number in range(50)]
    assert all(fields[5] == "cowrie.command.input" for fields in lines)
    assert not spool.exists()
    assert outputs.statistics()[0].dropped == 0


async def test_alerts_reach_rsyslog_as_warnings_with_a_digest(
    tmp_path: Path, rsyslog: Rsyslog
) -> None:
    config = parse_config(
        {
            "sensor": "honeypot-01",
            "storage": {"data_dir": str(tmp_path / "var")},
            "outputs": [
                {
                    "type": "syslog",
                    "name": "siem",
                    "transport": "tcp",
                    "address": f"127.0.0.1:{rsyslog.tcp}",
                    "eventids": [],
                }
            ],
            "alerts": [
                {
                    "name": "dropper",
                    "when": "command",
                    "pattern": "wget|curl",
                    "output": "siem",
                    "max_per_interval": 2,
                    "interval_seconds": 0.3,
                }
            ],
        }
    )
    outputs = Outputs(config)
    events = [SessionCommand(peer=PEER, channel=0, input=f"wget http://x/{n}") for n in range(9)]
    await _run(outputs, [SessionCommand(peer=PEER, channel=0, input="ls"), *events])
    lines = await asyncio.to_thread(rsyslog.wait_lines, 3)
    assert [f[5] for f in lines] == ["alert", "alert", "alert.digest"]
    assert all(f[2] == "warning" for f in lines)
    first = json.loads(lines[0][7].strip())
    assert first["rule"] == "dropper" and first["event"]["input"] == "wget http://x/0"
    assert "7 more matches" in json.loads(lines[2][7].strip())["message"]
