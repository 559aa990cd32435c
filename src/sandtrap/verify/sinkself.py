"""The sinkhole's own reach (`sandbox.network: sinkhole`): what an attacker who took over its
parser could touch, probed from inside the sinkhole as the user its service runs as.

The threat (SECURITY.md, "The network sinkhole"): code execution in the sinkhole's service. The
checks: its processes hold no root and no capability; it has no default route; TCP to this
machine's addresses, the Docker bridge's gateway and a documentation address fails (and the
verifier's listeners see nothing); no Unix socket but the fetch broker's answers (no engine, no
gate). Judging is pure (`sinkhole_self_rows`); running is `probe_sinkhole`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sandtrap.errors import SandboxError
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.sinknet import FETCH_MOUNT, FETCH_SOCKET
from sandtrap.verify.checks import Row

NOBODY = "65534"  # the sinkhole's service drops to nobody (network/service.py)
ALLOWED_SOCKETS = frozenset({f"{FETCH_MOUNT}/{FETCH_SOCKET}"})

# Standard library only: it runs in the sinkhole's image, as nobody. Prints one JSON object.
PROBE = r"""
import errno, json, os, socket, stat, sys
args = json.loads(sys.argv[1])

def err(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__

def tcp(target):
    host, _, port = target.rpartition(":")
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
        return "connected"
    except OSError as e:
        return "timeout" if isinstance(e, socket.timeout) else err(e)
    finally:
        s.close()

def udp(target):
    host, _, port = target.rpartition(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(b"sandtrap-verify-udp", (host, int(port)))
        return "sent"
    except OSError as e:
        return err(e)
    finally:
        s.close()

def unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(path)
        return "connected"
    except OSError as e:
        return err(e)
    finally:
        s.close()

def processes():
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                fields = dict(l.split(":", 1) for l in f if ":" in l)
        except OSError:
            continue
        uids = fields.get("Uid", "?").split() + ["?"]
        out.append([pid, uids[1] if len(uids) > 2 else "?", fields.get("CapEff", "?").strip()])
    return out

def default_route():
    with open("/proc/net/route") as f:
        return any(l.split()[1] == "00000000" for l in list(f)[1:] if len(l.split()) > 1)

def sockets():
    found = {}
    for top in ("/",):
        for root, dirs, files in os.walk(top):
            if root == "/":
                dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
            for name in files:
                path = os.path.join(root, name)
                try:
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found[path] = unix(path)
                except OSError:
                    pass
    for path in args["paths"]:
        if path not in found:
            found[path] = "absent" if not os.path.lexists(path) else unix(path)
    return found

print(json.dumps({
    "uid": os.getuid(),
    "processes": processes(),
    "default_route": default_route(),
    "tcp": {t: tcp(t) for t in args["targets"]},
    "udp": {t: udp(t) for t in args.get("udp", [])},
    "unix": sockets(),
}))
"""


async def probe_sinkhole(
    engine: Engine,
    container: str,
    targets: Sequence[str],
    paths: Sequence[str],
    udp: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the probe in the sinkhole container as nobody; its JSON observations.

    Raises:
        SandboxError: the probe did not run or said nothing readable.
    """
    spec = {"targets": list(targets), "paths": list(paths), "udp": list(udp)}
    argv = ["python3", "-c", PROBE, json.dumps(spec)]
    try:
        async with asyncio.timeout(120):
            status, out, err = await engine.run(container, argv, user=NOBODY)
    except TimeoutError:
        raise SandboxError("the sinkhole probe timed out after 120s") from None
    try:
        result: dict[str, Any] = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SandboxError(f"the sinkhole probe failed (exit {status}): {err[-300:]!r}") from None
    return result


def sinkhole_self_rows(
    obs: Mapping[str, Any], listener_hits: Sequence[str], what: Mapping[str, str]
) -> list[Row]:
    """Rows for the sinkhole's own reach; `what` names each TCP target ("host loopback", ...)."""
    procs = [list(p) for p in obs.get("processes") or []]
    privileged = [p for p in procs if p[1] == "0" or p[2].strip("0") != ""]
    connected = [t for t, result in (obs.get("tcp") or {}).items() if result == "connected"]
    reachable = sorted(
        path
        for path, result in (obs.get("unix") or {}).items()
        if result == "connected" and path not in ALLOWED_SOCKETS
    )
    tcp_seen = ", ".join(
        f"{what.get(t, t)} {t}: {r}" for t, r in sorted((obs.get("tcp") or {}).items())
    )
    unix_seen = ", ".join(f"{p}: {r}" for p, r in sorted((obs.get("unix") or {}).items()))
    return [
        Row(
            "sinkhole: processes",
            "sinkhole",
            "no root, no capability (service nobody, announcer 65533)",
            ", ".join(f"pid {p} uid {u} CapEff {c}" for p, u, c in procs) or "(none)",
            "FAIL" if privileged or not procs else "PASS",
        ),
        Row(
            "sinkhole: default route",
            "sinkhole",
            "none (the subnet only)",
            "present" if obs.get("default_route") else "none",
            "FAIL" if obs.get("default_route") else "PASS",
        ),
        Row(
            "sinkhole: TCP to the host, the bridge gateway, a documentation address",
            "sinkhole",
            "no connection; the verifier's listeners see nothing",
            (tcp_seen or "(no targets)")
            + (f"; listeners hit by {', '.join(listener_hits)}" if listener_hits else ""),
            "FAIL" if connected or listener_hits or not obs.get("tcp") else "PASS",
        ),
        Row(
            "sinkhole: Unix sockets (engine, gate)",
            "sinkhole",
            "none answers but the fetch broker's",
            unix_seen or "(none)",
            "FAIL" if reachable else "PASS",
        ),
    ]


def bridge_row(ports: Mapping[str, tuple[int, bool]] | None, sinkhole_index: int | None) -> Row:
    """The host's bridge: every port but the sinkhole's isolated (`network/isolate.py`); None
    when the bridge is not visible from here (WARN: only the sandboxes' ARP isolation holds)."""
    check, expected = "sinkhole: bridge ports isolated", "every sandbox port, not the sinkhole's"
    if ports is None:
        return Row(check, "host", expected, "bridge not visible here", "WARN")
    open_ports = sorted(name for name, (index, on) in ports.items()
                        if not on and index != sinkhole_index)  # fmt: skip
    sink_isolated = any(on for index, on in ports.values() if index == sinkhole_index)
    observed = (
        f"{len(ports)} ports; not isolated: {', '.join(open_ports) or 'none but the sinkhole'}"
    )
    if sinkhole_index is None or sink_isolated:
        observed += "; the sinkhole's port " + ("isolated" if sink_isolated else "not found")
    failed = bool(open_ports) or sinkhole_index is None or sink_isolated
    return Row(check, "host", expected, observed, "FAIL" if failed else "PASS")
