"""Judging what the host saw of a sandbox under attack: its runtime, user namespace, the fork,
memory, CPU and disk bombs, a fresh login, and the runtime's version against known breakouts.

Pure functions from observations to rows, like verify/checks.py (which judges the probe's view
from inside); running the attacks is verify/attacks.py's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sandtrap.verify.checks import Row, Runtime, _row


def runtime_row(runtime: Runtime, inspected: str, uname: str) -> Row:
    gvisor = uname.startswith("4.4.0")
    ok = inspected == runtime and (gvisor if runtime == "runsc" else not gvisor)
    return _row("sandbox runtime", "host", runtime, f"{inspected} (uname {uname})", ok)


def userns_row(engine_remaps: bool, host_uid: int | None) -> Row:
    """Root in the sandbox as the host sees it: an unprivileged uid under userns-remap.

    Remapping is an opt-in (scripts/ensure-docker --userns, SECURITY.md): without it the row is
    INFO, with it root must map to a non-zero host uid.
    """
    expected = "unprivileged host uid (userns-remap)"
    if host_uid is None:
        observed = "the sandbox's host process is not visible here (remote engine?); engine "
        observed += "remaps" if engine_remaps else "does not remap"
        return Row("user namespace remapping", "host", expected, observed, "INFO")
    observed = f"host uid {host_uid}"
    if not engine_remaps:
        return Row("user namespace remapping", "host", expected, f"{observed}; off", "INFO")
    observed += "; engine remaps (userns)"
    return _row("user namespace remapping", "host", expected, observed, host_uid != 0)


def forkbomb_row(
    result: Mapping[str, Any] | None,
    host_peak: int,
    pids_limit: int,
    state: str,
    runtime: Runtime,
    host_limit: int | None = None,
) -> Row:
    """`state`: "answers" (still serves), "stopped" (the sandbox died), or "hung".

    `host_limit` is the pids cgroup limit (`hardening.host_pids_limit`; gVisor's own tasks count).
    """
    inside = (
        f"peak {result.get('peak_processes')} inside, fork refused: {result.get('fork_refused')}"
        if result is not None
        else "probe did not report"
    )
    observed = f"{inside}; host pids peak {host_peak}; sandbox {state}"
    host_limit = pids_limit if host_limit is None else host_limit
    held = host_peak <= host_limit + 2
    if runtime == "runsc":
        # The Sentry's host tasks count against the cgroup; when it cannot get more, gVisor
        # ends the whole sandbox. Contained (the host and the service are unaffected).
        expected = f"host pids <= {host_limit}; sandbox answers or is ended (gVisor)"
        return _row("fork bomb", "user", expected, observed, held and state != "hung")
    ok = held and state == "answers" and result is not None
    ok = ok and int(result.get("peak_processes", 0) if result else 0) <= pids_limit + 2
    expected = f"at most pids_limit ({pids_limit}) processes; sandbox answers after"
    return _row("fork bomb", "user", expected, observed, ok)


def membomb_row(result: Mapping[str, Any], memory_mb: int, runtime: Runtime = "runc") -> Row:
    """`result` is the probe's report, or `sandbox_ended` when the whole sandbox died meanwhile."""
    if result.get("sandbox_ended"):
        # gVisor: the Sentry is the cgroup's only big process, so the host's OOM killer ends the
        # whole sandbox. Contained (the host and the service are unaffected); under runc the
        # kernel kills the allocating process and the sandbox lives on, so that is a failure.
        oom = bool(result.get("oom_killed"))
        observed = f"whole sandbox ended (exit {result.get('exit_code')}, OOM-killed: {oom})"
        if runtime == "runsc":
            # The engine does not always flag the kill as OOM; exit 137 is the SIGKILL itself.
            killed = oom or result.get("exit_code") == 137
            expected = f"stopped at or below {memory_mb} MiB, or the sandbox OOM-killed (gVisor)"
            return _row("memory bomb", "user", expected, observed, killed)
        return _row("memory bomb", "user", f"stopped at or below {memory_mb} MiB", observed, False)
    code, reached = int(result.get("returncode", 0)), int(result.get("reached_mb", 0))
    # Killed (OOM: SIGKILL, -9) or refused (MemoryError, exit 1) before 4x the limit.
    ok = code != 0 and reached <= memory_mb
    how = "killed by SIGKILL (OOM)" if code == -9 else f"exit {code}"
    return _row(
        "memory bomb",
        "user",
        f"stopped at or below {memory_mb} MiB",
        f"{how} after {reached} MiB",
        ok,
    )


def cpu_row(cpu_seconds: float, wall_seconds: float, cpus: float, throttled: int) -> Row:
    ratio = cpu_seconds / wall_seconds if wall_seconds else 0.0
    ok = ratio <= cpus * 1.15 + 0.05
    return _row(
        "CPU spin",
        "user",
        f"at most {cpus:g} CPU",
        f"{ratio:.2f} CPU over {wall_seconds:.1f}s (throttled periods {throttled})",
        ok,
    )


def disk_row(event: Mapping[str, Any] | None, stopped_after: float | None, limit_mb: int) -> Row:
    ok = event is not None and stopped_after is not None
    observed = (
        f"sandbox.disk_exceeded at {event.get('size_mb')} MiB; stopped after {stopped_after:.1f}s"
        if event is not None and stopped_after is not None
        else f"event: {'yes' if event else 'no'}, stopped: {stopped_after is not None}"
    )
    return _row(
        "disk fill", "user", f"sandbox stopped over {limit_mb} MiB, event emitted", observed, ok
    )


def login_row(seconds: float | None, error: str = "") -> Row:
    ok = seconds is not None and seconds <= 2.0
    observed = f"shell answered in {seconds:.2f}s" if seconds is not None else f"failed: {error}"
    return _row("new SSH login after the bombs", "host", "within 2 s", observed, ok)


# Fixed releases, from the runc advisories: CVE-2024-21626 fixed in 1.1.12 (GHSA-xr7r-f8xq-vfvv);
# CVE-2025-31133, CVE-2025-52565 and CVE-2025-52881 fixed in 1.2.8, 1.3.3 and 1.4.0-rc.3 (runc
# release notes, as cited by containerd PR #12475 and kubernetes/kops issue #17756).
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-rc\.?(\d+))?")


def parse_version(text: str) -> tuple[int, int, int, int] | None:
    """(major, minor, patch, rc) with rc 1000 for a release; None when unparsable."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch, rc = match.groups()
    return int(major), int(minor), int(patch), int(rc) if rc is not None else 1000


def runc_advisories(version: str) -> list[str]:
    """Known breakouts an upstream runc `version` is exposed to (by upstream version number)."""
    parsed = parse_version(version)
    if parsed is None:
        return []
    found = []
    if parsed < (1, 0, 0, 6):
        found.append("CVE-2019-5736")
    if parsed < (1, 1, 12, 1000):
        found.append("CVE-2024-21626")
    if (
        parsed < (1, 2, 8, 1000)
        or (1, 3, 0, 0) <= parsed < (1, 3, 3, 1000)
        or ((1, 4, 0, 0) <= parsed < (1, 4, 0, 3))
    ):
        found += ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]
    return found


def version_rows(components: Mapping[str, str], strict: bool) -> list[Row]:
    rows = []
    for name in ("Engine", "containerd", "runc", "runsc"):
        version = components.get(name)
        if version is None:
            continue
        if name != "runc":
            rows.append(Row(f"version: {name}", "host", "reported", version, "INFO"))
            continue
        advisories = runc_advisories(version)
        note = ""
        if advisories and re.search(r"(deb|ubuntu|el)\d", version):
            note = " (distribution build: fixes may be backported; check its security tracker)"
        rows.append(
            Row(
                "version: runc",
                "host",
                "no known breakout (>= 1.2.8 / 1.3.3 / 1.4.0-rc.3)",
                f"{version}: {', '.join(advisories)}{note}" if advisories else version,
                "PASS" if not advisories else ("FAIL" if strict else "WARN"),
            )
        )
    return rows


__all__ = [
    "cpu_row",
    "disk_row",
    "forkbomb_row",
    "login_row",
    "membomb_row",
    "parse_version",
    "runc_advisories",
    "runtime_row",
    "userns_row",
    "version_rows",
]
