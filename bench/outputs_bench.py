"""`python -m bench.outputs_bench`: events through the outputs while a receiver stalls (issue 17).

Part 1 (no engine): events offered at a steady rate to a cowrie file, a syslog TCP receiver and a
webhook receiver, both receivers stalling for `--stall` seconds in the middle; reports events/s
delivered, how long `offer` took (the session's cost), and what was lost (should be nothing).
Part 2 (real engine, OpenSSH): `ssh host true` latency with no outputs, then with a cowrie output
and a webhook whose receiver never answers; reports the ratio of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.resources import remove_labelled_containers
from bench.service import BENCH_PASSWORD, BENCH_USER, RunningService, bench_config
from bench.sshclient import ssh_argv, timed_run
from sandtrap.config import DEFAULT_IMAGE, parse_config
from sandtrap.events import Peer, SessionCommand
from sandtrap.outputs import Outputs

PEER = Peer("3f2a9c1b7d4e", "203.0.113.45", 51234, 22)


class Stall:
    """Receivers stall while `until` is in the future."""

    def __init__(self) -> None:
        self.until = 0.0

    async def wait(self) -> None:
        while time.monotonic() < self.until:  # noqa: ASYNC110 - a moving deadline, not an event
            await asyncio.sleep(0.05)


async def _syslog_server(stall: Stall, counts: dict[str, int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await stall.wait()  # not reading: the sender's socket buffers fill up
                head = await reader.readuntil(b" ")
                await reader.readexactly(int(head[:-1]))
                counts["syslog"] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _webhook_server(stall: Stall, counts: dict[str, int]) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        await stall.wait()
        body = await request.json()
        counts["webhook"] += len(body["events"])
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def through_outputs(rate: int, seconds: float, stall_seconds: float) -> dict[str, Any]:
    stall, counts = Stall(), {"syslog": 0, "webhook": 0}
    syslog = await _syslog_server(stall, counts)
    hook = await _webhook_server(stall, counts)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "sensor": "bench",
                "storage": {"data_dir": tmp},
                "outputs": [
                    {"type": "cowrie"},
                    {
                        "type": "syslog",
                        "transport": "tcp",
                        "address": f"127.0.0.1:{syslog.sockets[0].getsockname()[1]}",
                        "timeout_seconds": 1,
                        "retry_max_seconds": 2,
                    },
                    {
                        "type": "webhook",
                        "url": f"http://127.0.0.1:{hook.addresses[0][1]}/hook",
                        "timeout_seconds": 1,
                        "retry_max_seconds": 2,
                        "batch_max_events": 500,
                        "batch_max_seconds": 0.2,
                    },
                ],
            }
        )
        outputs = Outputs(config)
        task = asyncio.create_task(outputs.run())
        offered, took = 0, []
        started = time.monotonic()
        stall_at = started + (seconds - stall_seconds) / 2
        while (now := time.monotonic()) - started < seconds:
            if stall.until == 0.0 and now >= stall_at:
                stall.until = now + stall_seconds
            due = int((now - started) * rate)
            while offered < due:
                event = SessionCommand(peer=PEER, channel=0, input=f"echo {offered}")
                t0 = time.perf_counter()
                outputs.offer(event)
                took.append(time.perf_counter() - t0)
                offered += 1
            await asyncio.sleep(0.005)
        stats = {s.name: s for s in outputs.statistics()}
        peak_spool = {name: s.spooled for name, s in stats.items()}
        async with asyncio.timeout(120):
            while any(s.delivered < offered and s.dropped == 0 for s in outputs.statistics()):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        drained = time.monotonic() - started
        outputs.stop()
        await task
        lines = (Path(tmp) / "log" / "cowrie.json").read_text().count("\n")
    syslog.close()
    await hook.cleanup()
    took.sort()
    final = {s.name: s for s in outputs.statistics()}
    return {
        "offered": offered,
        "seconds_until_all_delivered": round(drained, 1),
        "offer_p50_us": round(took[len(took) // 2] * 1e6, 1),
        "offer_p99_us": round(took[len(took) * 99 // 100] * 1e6, 1),
        "offer_max_us": round(took[-1] * 1e6, 1),
        "cowrie_lines": lines,
        "received": {"syslog": counts["syslog"], "webhook": counts["webhook"]},
        "spooled_during_stall": peak_spool,
        "dropped": {name: s.dropped for name, s in final.items()},
    }


def session_latency(runs: int, image: str) -> dict[str, Any]:
    """Median `ssh true` seconds without outputs and with outputs whose receiver never answers."""
    results: dict[str, list[float]] = {}
    for label in ("none", "stalled"):
        sensor = f"bench-out-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            config = bench_config(Path(tmp), sensor, image, max_sandboxes=8, pool_size=2)
            if label == "stalled":
                # A receiver that accepts and never answers: a listening socket nobody reads.
                import socket

                black_hole = socket.socket()
                black_hole.bind(("127.0.0.1", 0))
                black_hole.listen(1000)
                port = black_hole.getsockname()[1]
                config = config.model_copy(
                    update={
                        "outputs": parse_config(
                            {
                                "outputs": [
                                    {"type": "cowrie"},
                                    {"type": "webhook", "url": f"http://127.0.0.1:{port}/x",
                                     "batch_max_seconds": 0},
                                ]
                            }
                        ).outputs
                    }
                )  # fmt: skip
            service = RunningService(config).start()
            try:
                service.call(service.service.pool.wait_warm)
                argv = ssh_argv(service.port, BENCH_USER, BENCH_PASSWORD, "true")
                timed_run(argv, 60)  # warm-up
                results[label] = [timed_run(argv, 60).total for _ in range(runs)]
            finally:
                service.stop()
                remove_labelled_containers(sensor)
                if label == "stalled":
                    black_hole.close()
    medians = {label: statistics.median(values) for label, values in results.items()}
    return {
        "runs": runs,
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "ratio_stalled_vs_none": round(medians["stalled"] / medians["none"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outputs_bench", description=__doc__)
    parser.add_argument("--rate", type=int, default=2000, help="events/s offered")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stall", type=float, default=10.0, help="receivers stall this long")
    parser.add_argument("--runs", type=int, default=20, help="ssh logins per configuration")
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--no-sessions", action="store_true", help="skip part 2 (the engine)")
    args = parser.parse_args()
    print("through outputs:", asyncio.run(through_outputs(args.rate, args.seconds, args.stall)))
    if not args.no_sessions:
        subprocess.run(["docker", "version"], capture_output=True, check=True)
        print("session latency:", session_latency(args.runs, args.image))


if __name__ == "__main__":
    main()
