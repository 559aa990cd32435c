"""How the console writes values: times, durations, sizes, changes, and one-line summaries of any
event record (the fields beyond the common ones), for templates and the live feed alike.

Pure and text-only: escaping is Jinja2's autoescape (or the browser's textContent for the live
feed); nothing here builds markup. Attacker strings are cut to a bound, never interpreted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

COMMON_FIELDS = frozenset(
    {"timestamp", "eventid", "sensor", "session", "src_ip", "src_port", "dst_port", "_id"}
)
MAX_VALUE_CHARS = 300
# The field that says most about an event, shown first when present.
_LEAD = (
    "input",
    "username",
    "method",
    "url",
    "query",
    "qtype",
    "dst_ip",
    "dst_port",
    "path",
    "magic",
    "yara",
    "name",
    "reason",
    "sha256",
)


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(text: Any) -> str:
    """`2026-11-29 14:30:10` (UTC) from an RFC 3339 time; the input cut short when unparsable."""
    moment = parse_time(text)
    if moment is None:
        return clip(text, 40) if text else "-"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def offset(text: Any, start: Any) -> str:
    """`+12.3 s` from the session's start."""
    moment, origin = parse_time(text), parse_time(start)
    if moment is None or origin is None:
        return ""
    seconds = (moment - origin).total_seconds()
    return f"+{seconds:.1f} s" if seconds < 600 else f"+{seconds / 60:.1f} min"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"  # pragma: no cover - the loop returns


def change(percent: float | None) -> str:
    """`+12 %`, `-3 %`, or an empty string when there is nothing to compare."""
    if percent is None:
        return ""
    return f"{percent:+.0f} %"


def clip(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as text of at most `limit` characters (an ellipsis marks a cut)."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "null"
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fields(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The event-specific fields of a record as (name, text), the telling one first."""
    # dst_port is the honeypot's own port on SSH events, but where a sandbox connected to on
    # network.* events (the sinkhole's, issue 16).
    hidden = COMMON_FIELDS
    if str(record.get("eventid", "")).startswith("network."):
        hidden = COMMON_FIELDS - {"dst_port"}
    names = [name for name in record if name not in hidden]
    ordered = [name for name in _LEAD if name in names] + [n for n in names if n not in _LEAD]
    return [(str(name), clip(record[name])) for name in ordered if record[name] not in (None, "")]


def summary(record: dict[str, Any], limit: int = 160) -> str:
    """One line for a record: `name=value` pairs of its specific fields, cut to `limit`."""
    return clip(" ".join(f"{name}={text}" for name, text in fields(record)), limit)


def live_item(event_id: int, record: dict[str, Any]) -> dict[str, Any]:
    """What the live feed sends for one event (the browser writes it with textContent only)."""
    return {
        "id": event_id,
        "time": when(record.get("timestamp")),
        "eventid": clip(record.get("eventid"), 64),
        "session": clip(record.get("session") or "", 64),
        "src_ip": clip(record.get("src_ip") or "", 64),
        "summary": summary(record),
    }
