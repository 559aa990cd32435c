"""Rich tables for the analyst commands. Every cell is a `Text` of `safe_text(...)`: attacker
strings are never parsed as markup and never reach the terminal with control characters."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sandtrap.analysis.query import Stats
from sandtrap.textsafe import safe_text


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
