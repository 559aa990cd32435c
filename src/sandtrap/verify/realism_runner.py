"""`sandtrap verify-realism`: log in to a real SandTrap as an attacker would and run the checks of
container- and honeypot-detection tools from inside.

Runs the real service in-process (`app.serve`, own sensor name, temporary data dir, listening on
127.0.0.1:0, a root login with a random password), waits for a warm sandbox, logs in with a PTY
over SSH and runs `verify/realism.py`'s script; judging is that module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from sandtrap.app import Service, serve
from sandtrap.config import Config, parse_config, with_sensor
from sandtrap.errors import SandTrapError
from sandtrap.network.deploy import remove_sinkhole
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import is_lxcfs_serving, sandbox_labels
from sandtrap.ssh.client import login_pty_and_run
from sandtrap.verify.checks import Row
from sandtrap.verify.realism import SCRIPT, judge, parse_sections


def realism_config(config: Config, data_dir: Path) -> tuple[Config, str]:
    """The operator's sandbox settings with the check's own sensor, listener and root login."""
    password = secrets.token_urlsafe(16)
    data = config.model_dump(mode="json")
    with_sensor(config, data, f"{config.sensor[:200]}-realism-{secrets.token_hex(4)}")
    data["ssh"].update(listen=["127.0.0.1:0"], auth_failure_delay_seconds=0.1)
    data["auth"].update(credentials=[{"username": "root", "password": password}], deny=[])
    data["auth"]["accept_after_failures"] = 0
    data["pool"].update(size=1, max_sandboxes=2, allocate_timeout_seconds=120, sticky=False)
    data["storage"]["data_dir"] = str(data_dir)
    return parse_config(data, "<verify-realism>"), password


async def verify_realism(
    config: Config, *, report: Callable[[str], None] = lambda _line: None
) -> list[Row]:
    """Log in once and judge what the detection checks saw; returns the rows.

    Raises:
        SandTrapError: the engine is unreachable, the image is missing, or the login failed.
    """
    with tempfile.TemporaryDirectory(prefix="sandtrap-realism-") as tmp:
        vconfig, password = realism_config(config, Path(tmp))
        engine = Engine(vconfig.sandbox.docker_url)
        try:
            report(f"starting a SandTrap service (sensor {vconfig.sensor})")
            return await _with_service(vconfig, password, report)
        finally:
            with contextlib.suppress(SandTrapError):
                for item in await engine.containers(*sandbox_labels(vconfig.sensor)):
                    await engine.remove(str(item["Id"]))
                if vconfig.sandbox.network == "sinkhole":
                    await remove_sinkhole(engine, vconfig)
            await engine.close()


async def _with_service(vconfig: Config, password: str, report: Callable[[str], None]) -> list[Row]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    services: list[Service] = []
    try:
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(
                serve(vconfig, ready=ready, stop=stop, on_ready=services), name="realism-serve"
            )
            waiter = tasks.create_task(ready.wait())
            await asyncio.wait({service_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not services:
                waiter.cancel()
                raise SandTrapError("the service did not start")
            try:
                async with asyncio.timeout(120):
                    await services[0].pool.wait_warm(1)
                lxcfs = vconfig.sandbox.lxcfs != "off" and await asyncio.to_thread(
                    is_lxcfs_serving, vconfig.sandbox.lxcfs_dir
                )
                report("logging in with a PTY and running the checks")
                # Give the login's utmp record (written beside the shell) time to land.
                result = await login_pty_and_run(
                    "127.0.0.1", services[0].front.ports[0], "root", password, "sleep 2\n" + SCRIPT
                )
            finally:
                stop.set()
    except BaseExceptionGroup as group:
        while isinstance(group, BaseExceptionGroup):
            group = group.exceptions[0]
        raise group from None
    if result.error is not None:
        raise SandTrapError(f"the check's SSH login failed: {result.error}")
    return judge(
        parse_sections(result.stdout),
        front_fingerprint=result.host_key_fingerprint or "?",
        src_ip="127.0.0.1",
        memory_mb=vconfig.sandbox.memory_mb,
        lxcfs=lxcfs,
        host_keys=vconfig.sandbox.host_keys,
        agent=vconfig.sandbox.agent,
    )


__all__ = ["realism_config", "verify_realism"]
