"""A description of the machine and the software under test, printed before any figure."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import asyncssh


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def describe(runtime: str, cowrie: str | None) -> dict[str, str]:
    """Key facts: hardware, kernel, engine and the versions of every peer."""
    return {
        "CPU": f"{os.cpu_count()} cores ({_cpu_model()})",
        "Memory": _memory_gib(),
        "Kernel": f"{platform.system()} {platform.release()}",
        "Docker engine": _first_line(
            ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]
        ),
        "Runtime": f"{runtime} (engine default: "
        + _first_line(["docker", "info", "--format", "{{.DefaultRuntime}}"])
        + ", cgroup "
        + _first_line(["docker", "info", "--format", "{{.CgroupVersion}}"])
        + ")",
        "Python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "OpenSSH": _first_line(["ssh", "-V"]),
        "Cowrie": cowrie or "not available",
    }


def render_text(facts: dict[str, str]) -> str:
    width = max(len(key) for key in facts)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in facts.items())
