"""Rich tables and JSON records for the command line (sessions, stats, sandboxes, verify-security).

Every cell is a `Text` of `safe_text(...)`: attacker strings are never parsed as markup and never
reach the terminal with control characters. The commands themselves are sandtrap.cli's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sandtrap.analysis.query import Stats
from sandtrap.textsafe import safe_text

if TYPE_CHECKING:  # types only: `sessions list` need not import the engine client
    from sandtrap.sandbox.inventory import SandboxRow
    from sandtrap.verify.checks import Row


def cell(value: Any, limit: int | None = None) -> Text:
    return Text(safe_text("-" if value is None else str(value), limit))


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column == "session", overflow="fold")
    for row in rows:
        table.add_row(*(cell(value, 200) for value in row))
    return table


def sessions_table(rows: list[dict[str, Any]]) -> Table:
    columns = (
        "session",
        "started",
        "source IP",
        "user",
        "password",
        "client",
        "cmds",
        "dur s",
        "bytes in/out",
        "exit",
    )
    return _table(
        f"{len(rows)} session(s)",
        columns,
        [
            (
                r["session"],
                (r["started"] or "")[:19].replace("T", " "),
                r["src_ip"],
                r["username"],
                r["password"],
                r["client_version"],
                r["commands"],
                r["duration"],
                f"{r['bytes_in'] or 0}/{r['bytes_out'] or 0}",
                r["exit_status"],
            )
            for r in rows
        ],
    )


def session_view(detail: dict[str, Any]) -> Group:
    meta = detail["session"]
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for key, value in meta.items():
        info.add_row(Text(key), cell(value))
    parts: list[Any] = [info]
    sections = (
        (
            "auth attempts",
            "auth_attempts",
            ("timestamp", "username", "password", "method", "success", "reason"),
        ),
        (
            "channels",
            "channels",
            ("channel", "kind", "command", "exit_status", "bytes_in", "bytes_out", "recording"),
        ),
        ("commands", "commands", ("timestamp", "channel", "source", "input")),
        ("files changed", "diffs", ("kind", "path")),
        ("artifacts", "artifacts", ("path", "size", "sha256")),
        ("network (sinkhole)", "network", ("timestamp", "eventid", "dst_ip", "dst_port", "detail")),
    )
    for title, key, columns in sections:
        rows = detail[key]
        parts.append(
            _table(
                f"{title} ({len(rows)})", columns, [tuple(r.get(c) for c in columns) for r in rows]
            )
        )
    return Group(*parts)


def stats_view(result: Stats) -> Group:
    since = result.since or "the beginning"
    head = Text(
        f"since {since}: {result.sessions} session(s), {result.auth_attempts} auth attempt(s)"
    )
    tables = [
        _table(title, (title.split()[-1].rstrip("s"), "count"), list(rows))
        for title, rows in (
            ("top usernames", result.usernames),
            ("top passwords", result.passwords),
            ("top source IPs", result.src_ips),
            ("top commands", result.commands),
        )
    ]
    return Group(head, *tables)


def print_view(renderable: Any) -> None:
    Console().print(renderable)


def human_size(size: int) -> str:
    """Bytes as B, KiB, MiB or GiB (binary units)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def age(moment: datetime | None, now: datetime) -> str:
    """How long before `now`, in its largest whole unit (d, h, m, s); "?" when unknown."""
    if moment is None:
        return "?"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def sandbox_record(row: SandboxRow) -> dict[str, Any]:
    """One sandbox as a JSON-ready object (`created` in ISO 8601, or null)."""
    record = dataclasses.asdict(row)
    record["created"] = row.created.isoformat() if row.created else None
    return record


def sandboxes_table(rows: Sequence[SandboxRow], sensor: str, now: datetime) -> Table:
    table = Table(title=f"sandboxes of sensor {safe_text(sensor)}")
    for column in ("container", "role", "session", "source IP", "hostname", "state", "age", "size"):
        # Identifiers are never cut (an analyst copies them); the rest folds on narrow terminals.
        table.add_column(column, no_wrap=column in ("container", "session"), overflow="fold")
    for row in rows:
        cells = (
            row.container_id[:12],
            row.role,
            row.session_id or "-",
            row.src_ip or "-",
            row.hostname,
            row.state,
            age(row.created, now),
            human_size(row.size_bytes),
        )
        table.add_row(*(Text(safe_text(value)) for value in cells))
    return table


_STATUS_STYLES = {"PASS": "green", "FAIL": "bold red", "WARN": "yellow", "INFO": "dim"}


def verify_table(
    rows: Sequence[Row], title: str = "sandtrap verify-security", who: str = "as"
) -> Table:
    table = Table(title=title)
    for column in ("check", who, "expected", "observed", "result"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [Text(safe_text(c)) for c in (row.check, row.who, row.expected, row.observed)]
        table.add_row(*cells, Text(row.status, style=_STATUS_STYLES[row.status]))
    return table
