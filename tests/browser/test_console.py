"""The web console in a real browser (Debian's chromium driven by Playwright) over sessions that
real SSH clients recorded against the real service on the real engine.

It loads the overview and sees a login arrive live, opens the recorded session, plays its replay
until the player's terminal shows the command's output, follows the captured artifact, and shows
that a username of `<img src=x onerror=...>` and a command holding `</script>` execute nothing:
no dialog, no flag set, no Content-Security-Policy violation, no page error. The overview and
session screenshots of the README (docs/img/) are taken here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pexpect
import pytest

from sandtrap.config import Config
from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers, service_config
from tests.webdata import write_dataset
from tests.webserver import ConsoleThread

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

CHROMIUM = os.environ.get("SANDTRAP_CHROMIUM", "/usr/bin/chromium")
# The README's screenshots: taken on every run, written over docs/img/ only when asked
# (SANDTRAP_UPDATE_SCREENSHOTS=1), so a test run leaves the tree as it was.
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
HOSTILE_USER = "<img src=x onerror=\"window.__pwned='user';alert('user')\">"
HOSTILE_COMMAND = 'echo \'</script><script>window.__pwned="cmd";alert("cmd")</script>\''
DROPPER = b"#!/bin/sh\n# web console test dropper\necho dropped\n"
# Written before the page loads: any payload that runs trips one of these.
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def _wait(condition: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _indexed(config: Config, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(config.storage.data_dir / "sandtrap.db")
    try:
        return list(db.execute(sql, params))
    finally:
        db.close()


def _interactive_login(service: RunningService) -> None:
    """root logs in through OpenSSH with a PTY, runs a command, a hostile echo, drops a file."""
    argv = ["-p", "123456", "ssh", "-tt", "-p", str(service.port), *SSH_OPTS, "root@127.0.0.1"]
    child = pexpect.spawn("sshpass", argv, timeout=30, dimensions=(24, 80))
    try:
        child.expect(r"root@[\w-]+:~# ")
        child.sendline("echo SANDTRAP-WEB-$((6*7))")
        child.expect("SANDTRAP-WEB-42")
        child.expect(r"# ")
        child.sendline(HOSTILE_COMMAND)
        child.expect(r"# ")
        child.sendline("printf '" + DROPPER.decode().replace("\n", "\\n") + "' > /tmp/dropper.sh")
        child.expect(r"# ")
        time.sleep(1.0)  # a pause the replay has to play through
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


async def _hostile_username(port: int) -> None:
    """A client offering `<img ...>` as its user name (refused: it is not a valid login)."""
    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username=HOSTILE_USER,
            password="hunter2",
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            login_timeout=30,
        ):
            pass


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A data directory with a month of synthetic history (so the overview has shape) and, on
    top, sessions recorded by the real service: an interactive root login and a hostile name."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing (make test-tools installs Debian's chromium)")
    data_dir = tmp_path_factory.mktemp("var")
    write_dataset(data_dir, sessions=400, hostile_session=False)
    config = service_config(data_dir, pool={"size": 1})
    service = RunningService(config).start()
    try:
        service.wait_warm()
        _interactive_login(service)
        asyncio.run(_hostile_username(service.port))
        closed = _wait(
            lambda: [e for e in service.events("session.closed") if e.get("username") == "root"],
            "the root session to close",
        )
        session = closed[0]["session"]
        artifact = hashlib.sha256(DROPPER).hexdigest()
        _wait(
            lambda: _indexed(config, "SELECT 1 FROM artifacts WHERE sha256 = ?", artifact),
            "the artifact in the index",
        )
        hostile = _wait(
            lambda: _indexed(
                config, "SELECT session FROM auth_attempts WHERE username = ?", HOSTILE_USER
            ),
            "the hostile attempt in the index",
        )[0][0]
        yield {
            "config": config,
            "service": service,
            "session": session,
            "hostile": hostile,
            "artifact": artifact,
        }
    finally:
        service.stop()
        remove_sensor_containers(config.sensor)


@pytest.fixture(scope="module")
def browser(recorded: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    taken = sorted(tmp_path.glob("*.png"))
    assert taken, "no screenshot was taken"
    if os.environ.get("SANDTRAP_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for path in taken:
            shutil.copyfile(path, DOCS_IMG / path.name)


@pytest.fixture
def page(browser: Any, recorded: dict[str, Any]) -> Iterator[Any]:
    # The console's own copy of the configuration under a sensor name fit for the README.
    shown = recorded["config"].model_copy(update={"sensor": "honeypot-01"})
    with ConsoleThread(shown) as console:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=console.url)
        tab = context.new_page()
        tab.add_init_script(WATCH)
        problems: list[str] = []
        tab.on(
            "dialog", lambda dialog: (problems.append(f"dialog {dialog.message}"), dialog.dismiss())
        )
        tab.on("pageerror", lambda error: problems.append(f"page error {error}"))
        tab.on(
            "console",
            lambda message: (
                problems.append(f"console {message.text}") if message.type == "error" else None
            ),
        )
        yield tab
        assert tab.evaluate("window.__pwned") is None
        assert tab.evaluate("window.__violations") == []
        assert problems == []
        context.close()


def test_overview_loads_and_updates_live(
    page: Any, recorded: dict[str, Any], screenshots: Path
) -> None:
    page.goto("/?period=30d")
    assert page.locator(".card").count() == 5
    before = int(page.locator('.card[data-card="connections"] .card-value').inner_text())
    assert before >= 100
    page.wait_for_selector("#live.on", timeout=15_000)
    assert page.locator("svg.timeline rect.bar").count() > 20
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)
    # A new login arrives: its connect shows in the feed and the card counts it, without reload.
    result = recorded["service"].ssh("echo live")
    assert result.returncode == 0, result.stderr
    page.wait_for_function(
        "n => Number(document.querySelector('.card[data-card=\"connections\"] .card-value')"
        ".textContent) > n",
        arg=before,
        timeout=30_000,
    )
    assert "session.connect" in page.locator("#feed").inner_text()
    # A hostile name arriving over the live feed is written as text too.
    # (On a thread of its own: Playwright's sync API runs an event loop on this one.)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _hostile_username(recorded["service"].port)).result(60)
    page.wait_for_function(
        "name => document.getElementById('feed').textContent.includes(name)",
        arg=HOSTILE_USER,
        timeout=30_000,
    )
    assert page.locator("#feed img").count() == 0


def test_session_replay_commands_and_artifact(
    page: Any, recorded: dict[str, Any], screenshots: Path
) -> None:
    session = recorded["session"]
    page.goto("/sessions?commands=yes&artifacts=yes&username=root")
    page.click(f'a.sid[href="/sessions/{session}"]')
    page.wait_for_url(f"**/sessions/{session}")
    commands = page.locator("#commands").inner_text()
    assert "echo SANDTRAP-WEB-$((6*7))" in commands and HOSTILE_COMMAND in commands
    terminal = page.locator(".player .ap-term-text").first
    assert "SANDTRAP-WEB-42" not in terminal.inner_text()
    page.locator(".player .ap-player").first.click()
    # The output, computed by the sandbox's shell, appears only by playing the recording.
    page.wait_for_function(
        "() => document.querySelector('.player .ap-term-text').textContent"
        ".includes('SANDTRAP-WEB-42')",
        timeout=30_000,
    )
    page.wait_for_timeout(2500)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(
        path=str(screenshots / "session.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1440, "height": 1240},
    )
    timeline = page.locator("#timeline").inner_text()
    assert "session.connect" in timeline and "sandbox.artifact" in timeline
    assert "/tmp/dropper.sh" in page.locator("#diff").inner_text()
    page.click(f'#artifacts a[href="/artifacts/{recorded["artifact"]}"]')
    page.wait_for_url(f"**/artifacts/{recorded['artifact']}")
    assert page.locator("#sha256").inner_text() == recorded["artifact"]
    sightings = page.locator("#sightings").inner_text()
    assert "/tmp/dropper.sh" in sightings and session[:12] in sightings
    assert "web console test dropper" in page.locator("pre.strings").inner_text()


def test_hostile_names_execute_nothing(page: Any, recorded: dict[str, Any]) -> None:
    page.goto(f"/sessions/{recorded['hostile']}")
    assert HOSTILE_USER in page.locator("#auth").inner_text()
    assert page.locator("#auth img").count() == 0
    page.goto("/sessions")
    assert page.locator("main img").count() == 0
    page.goto(f"/sessions/{recorded['session']}")
    assert page.locator("main script").count() == 0
    page.wait_for_timeout(500)
