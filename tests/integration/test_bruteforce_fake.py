"""Issue 13, "lose no attacker": a brute-forcer's every password is an event, at any rate.

The front on the fake engine, driven by the scripted guesser (sandtrap.ssh.client) from one
loopback address; the same on the real engine with OpenSSH clients is tests/docker/test_ssh_e2e.py.
"""

from __future__ import annotations

import collections

import pytest

from sandtrap import events as ev
from sandtrap.ssh.client import guess_passwords
from tests.integration.test_ssh_fake import Start

PASSWORDS = [f"guess-{n:03d}" for n in range(96)]


@pytest.mark.parametrize("per_connection", [1, 6])
async def test_96_passwords_8_at_a_time_are_all_recorded(start: Start, per_connection: int) -> None:
    # Default limits: only the fixture's short failure delay and report interval differ.
    h = await start()
    result = await guess_passwords(
        "127.0.0.1",
        h.port,
        "root",
        PASSWORDS,
        concurrency=8,
        per_connection=per_connection,
        local_addr=("127.0.0.2", 0),
        within_seconds=60,
    )
    assert sorted(result.sent) == PASSWORDS
    assert result.refused == 0
    await h.sink.wait_for(ev.SessionClosed, result.connections)
    failed = [e for e in h.sink.of(ev.AuthFailed) if e.method == "password"]
    recorded = collections.Counter(e.password for e in failed)
    assert recorded == collections.Counter(PASSWORDS)  # each one, exactly once
    assert {e.peer.src_ip for e in failed} == {"127.0.0.2"}
    assert not h.sink.of(ev.SessionRefused)
