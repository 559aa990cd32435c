"""The web console's routes over a synthetic index (tests/webdata.py) through Starlette's client:
every page answers, attacker strings arrive escaped, filters and pages cut right, the guard
refuses what it must, casts and files are served as data, the live feed sends what gets indexed.
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sandtrap.config import parse_config
from sandtrap.paths import DataLayout
from sandtrap.store.index import apply
from sandtrap.web.app import create_app
from sandtrap.web.security import CONTENT_SECURITY_POLICY
from tests.webdata import XSS_COMMAND, XSS_USER, write_dataset

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("web")
    facts = write_dataset(data_dir, sessions=80)
    facts["data_dir"] = data_dir
    return facts


def _client(data_dir: Path, **web: Any) -> TestClient:
    config = parse_config(
        {"sensor": "web-test", "storage": {"data_dir": str(data_dir)}, "web": web}
    )
    return TestClient(create_app(config), base_url="http://127.0.0.1:8080")


@pytest.fixture(scope="module")
def client(dataset: dict[str, Any]) -> Iterator[TestClient]:
    with _client(dataset["data_dir"], live_interval_seconds=0.1) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/?period=7d",
        "/?period=30d",
        "/?period=all",
        "/sessions",
        "/sessions?commands=yes&artifacts=yes&network=yes&since=30d",
        "/artifacts",
    ],
)
def test_pages_answer_with_the_strict_policy(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    # No inline script or style: every <script> has a src, no element has a style attribute.
    body = response.text
    assert body.count("<script") == body.count("<script src=")
    assert " style=" not in body and "<style" not in body


def test_overview_counts_and_escapes(client: TestClient, dataset: dict[str, Any]) -> None:
    body = client.get("/?period=all").text
    assert 'data-card="connections"' in body
    assert f'<div class="card-value">{len(dataset["sessions"]) + 1}</div>' in body
    assert "<img src=x" not in body and "&lt;img src=x onerror=" in body
    assert '<svg class="chart timeline"' in body and '<svg class="chart heatmap"' in body


def test_session_page_shows_everything_escaped(client: TestClient, dataset: dict[str, Any]) -> None:
    hostile = dataset["hostile"]
    response = client.get(f"/sessions/{hostile}")
    assert response.status_code == 200
    body = response.text
    assert XSS_USER not in body and XSS_COMMAND not in body
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=" in body
    assert f'data-cast="/api/sessions/{hostile}/casts/0"' in body
    assert f"/sessions/{hostile}/export" in body
    assert f'href="/artifacts/{dataset["artifact"]}"' in body
    # network.* and artifact.* events the other tables do not model are shown as they are.
    assert "network.http" in body and "artifact.analysed" in body
    assert "SandTrap_Shell_Dropper" in body and "c2.example" in body
    assert "session.connect" in body and "auth.success" in body


def test_a_prefix_redirects_and_unknown_ids_are_404(
    client: TestClient, dataset: dict[str, Any]
) -> None:
    response = client.get(f"/sessions/{dataset['hostile'][:8]}", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"/sessions/{dataset['hostile']}"
    assert client.get("/sessions/abcdef999999").status_code == 404
    assert client.get("/sessions/<script>").status_code == 404
    assert client.get("/artifacts/" + "0" * 64).status_code == 404
    assert client.get("/api/sessions/nothex").json()["error"]
    assert client.get("/no/such/page").status_code == 404


def test_filters_and_pages(client: TestClient, dataset: dict[str, Any]) -> None:
    everything = client.get("/api/sessions?per_page=1000").json()
    assert everything["page"] == 1
    network = client.get("/api/sessions?network=yes").json()["sessions"]
    assert network and all(row["network"] > 0 for row in network)
    assert dataset["hostile"] in {row["session"] for row in network}
    quiet = client.get("/api/sessions?network=no&commands=no").json()["sessions"]
    assert all(row["network"] == 0 and row["commands"] == 0 for row in quiet)
    users = client.get("/api/sessions", params={"username": XSS_USER}).json()["sessions"]
    assert [row["session"] for row in users] == [dataset["hostile"]]
    first, second = (client.get(f"/api/sessions?page={n}").json() for n in (1, 2))
    assert first["has_next"] and len(first["sessions"]) == 50
    assert not {r["session"] for r in first["sessions"]} & {
        r["session"] for r in second["sessions"]
    }
    recent = client.get("/api/sessions?since=2h").json()["sessions"]
    assert all(row["started"] >= recent[-1]["started"] for row in recent)
    for bad in ("since=yesterday", "commands=maybe", "page=0", "page=x"):
        assert client.get(f"/api/sessions?{bad}").status_code == 400
        assert client.get(f"/sessions?{bad}").status_code == 400


def test_casts_are_data(client: TestClient, dataset: dict[str, Any]) -> None:
    response = client.get(f"/api/sessions/{dataset['hostile']}/casts/0")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-asciicast"
    header = json.loads(response.text.splitlines()[0])
    assert header["version"] == 2
    assert client.get(f"/api/sessions/{dataset['hostile']}/casts/7").status_code == 404


def test_artifacts_list_detail_and_download(client: TestClient, dataset: dict[str, Any]) -> None:
    digest = dataset["artifact"]
    listed = client.get("/api/artifacts").json()["artifacts"]
    assert [row["sha256"] for row in listed] == [digest]
    page = client.get(f"/artifacts/{digest}").text
    assert "script (/bin/sh)" in page and "intact" in page and "kinsing dropper" in page
    assert "&lt;img src=x" in page and XSS_USER not in page
    detail = client.get(f"/api/artifacts/{digest}").json()
    assert detail["stored"] and detail["analyses"][0]["eventid"] == "artifact.analysed"
    download = client.get(f"/api/artifacts/{digest}/download")
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.content.startswith(b"#!/bin/sh")


def test_export_bundle_without_the_engine(client: TestClient, dataset: dict[str, Any]) -> None:
    hostile = dataset["hostile"]
    response = client.get(f"/sessions/{hostile}/export")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        names = archive.getnames()
    assert f"{hostile}/manifest.json" in names
    assert f"{hostile}/recordings/{hostile}-0.cast" in names
    assert any(name.startswith(f"{hostile}/files/") for name in names)


def test_the_console_is_read_only(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = client.request(method, "/sessions")
        assert response.status_code == 405
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_only_loopback_host_names_without_a_token(client: TestClient) -> None:
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 421
    assert client.get("/", headers={"host": "localhost:8080"}).status_code == 200
    assert client.get("/", headers={"host": "[::1]:8080"}).status_code == 200


def test_a_token_is_required_when_set(dataset: dict[str, Any]) -> None:
    with _client(dataset["data_dir"], token=TOKEN) as client:
        refused = client.get("/api/overview")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/static/console.css").status_code == 401
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/overview", headers=bearer).status_code == 200
        basic = base64.b64encode(f"analyst:{TOKEN}".encode()).decode()
        assert client.get("/", headers={"authorization": f"Basic {basic}"}).status_code == 200
        wrong = base64.b64encode(b"analyst:nope").decode()
        assert client.get("/", headers={"authorization": f"Basic {wrong}"}).status_code == 401
        # With a token any Host is served (the secret, not the name, is the guard).
        headers = {**bearer, "host": "honeypot.example.org"}
        assert client.get("/", headers=headers).status_code == 200


def test_static_assets_are_vendored_and_served(client: TestClient) -> None:
    js = client.get("/static/vendor/asciinema-player/asciinema-player.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/static/vendor/asciinema-player/asciinema-player.css").status_code == 200
    assert client.get("/static/console.js").status_code == 200


def _read_sse(lines: Iterator[str], kind: str) -> dict[str, Any]:
    current = None
    for line in lines:
        if line.startswith("event: "):
            current = line.removeprefix("event: ")
        elif line.startswith("data: ") and current == kind:
            return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError(f"stream ended before a {kind} message")


def test_live_feed_sends_what_gets_indexed(tmp_path: Path) -> None:
    write_dataset(tmp_path, sessions=5)
    layout = DataLayout(tmp_path)
    with (
        _client(tmp_path, live_interval_seconds=0.1) as client,
        client.stream("GET", "/api/live?period=24h") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        hello = _read_sse(lines, "hello")
        record = {
            "timestamp": "2099-01-01T00:00:00.000000Z",
            "eventid": "session.connect",
            "sensor": "web-test",
            "session": "5ee5ee5ee5ee",
            "src_ip": "192.0.2.99",
            "src_port": 1,
            "dst_port": 22,
        }
        db = sqlite3.connect(layout.index_db)
        apply(db, [record])
        db.commit()
        db.close()
        update = _read_sse(lines, "update")
    assert hello["last"] >= 1
    assert [e["session"] for e in update["events"]] == ["5ee5ee5ee5ee"]
    assert {card["key"] for card in update["cards"]} >= {"connections", "logins", "artifacts"}


def test_overview_json(client: TestClient) -> None:
    data = client.get("/api/overview?period=7d").json()
    assert len(data["heatmap"]) == 7 and all(len(row) == 24 for row in data["heatmap"])
    assert {c["key"] for c in data["cards"]} == {
        "connections",
        "logins",
        "sessions",
        "sources",
        "artifacts",
    }
    assert data["top"]["usernames"] and data["timeline"]
    assert client.get("/api/overview?period=1y").status_code == 400


def test_the_command_serves_and_refuses_open_addresses(tmp_path: Path) -> None:
    """`sandtrap web` as a process: prints its address, answers (with the token from
    SANDTRAP_WEB_TOKEN), stops on SIGTERM; an address off loopback without a token, or a token too
    short, is a usage error."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    write_dataset(tmp_path, sessions=3)
    config = tmp_path / "config.yaml"
    config.write_text(f"sensor: web-test\nstorage:\n  data_dir: {tmp_path}\n")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandtrap",
            "web",
            "--config",
            str(config),
            "--listen",
            "192.0.2.1:8080",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "set web.token" in refused.stderr
    short = subprocess.run(
        [sys.executable, "-m", "sandtrap", "web", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SANDTRAP_WEB_TOKEN": "short"},
    )
    assert short.returncode == 2 and "SANDTRAP_WEB_TOKEN" in short.stderr
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandtrap",
            "web",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SANDTRAP_WEB_TOKEN": TOKEN},
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            line = process.stdout.readline()
            assert line.startswith("SandTrap console: http://127.0.0.1:"), line
            url = line.split(": ", 1)[1].strip()
            overview = url + "api/overview?period=all"
            with pytest.raises(urllib.error.HTTPError) as refusal:
                urllib.request.urlopen(overview, timeout=30)  # noqa: S310 - loopback
            assert refusal.value.code == 401
            refusal.value.close()
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            request = urllib.request.Request(overview, headers=bearer)  # noqa: S310 - loopback
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
                assert json.load(answer)["cards"][0]["value"] == 4
        finally:
            process.send_signal(signal.SIGTERM)
            # uvicorn shuts down, then lets the signal end the process (status -SIGTERM).
            status = process.wait(30)
        assert status in (0, -signal.SIGTERM)
        assert "Shutting down" in process.stderr.read()


def test_a_file_seen_before_shows_its_analysis_once(
    client: TestClient, dataset: dict[str, Any]
) -> None:
    detail = client.get(f"/api/sessions/{dataset['hostile']}").json()
    assert [r["eventid"] for r in detail["analyses"]] == ["artifact.analysed"]
    assert detail["analyses"][0]["session"] == dataset["hostile"]
    # A session whose file was analysed in another session's event still shows that analysis.
    others = client.get("/api/sessions?artifacts=yes").json()["sessions"]
    for row in others:
        other = client.get(f"/api/sessions/{row['session']}").json()
        assert len(other["analyses"]) == 1
