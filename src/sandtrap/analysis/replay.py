"""Replaying asciicast v2 recordings on the analyst's terminal, and finding a session's casts.

Owns reading casts (tolerating a last line cut by a crash) and timing the playback: every pause is
capped by the idle limit and divided by the speed, so a replay always ends. The bytes are the
recording and are written as they are (the analyst asked to see the attacker's terminal).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DEFAULT_IDLE_LIMIT_SECONDS = 2.0
_CAST_NAME = re.compile(r"^(?P<session>[0-9a-f]+)-(?P<channel>\d+)\.cast$")


@dataclass(frozen=True)
class Cast:
    header: dict[str, Any]
    events: list[tuple[float, str, str]]


def read_cast(path: Path) -> Cast:
    """Parse a cast; a last line cut short (a crash mid-write) is ignored.

    Raises:
        ValueError: the first line is not an asciicast v2 header.
    """
    with path.open("rb") as handle:
        lines = handle.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty recording")
    header = json.loads(lines[0])
    if not isinstance(header, dict) or header.get("version") != 2:
        raise ValueError(f"{path}: not an asciicast v2 file")
    events = []
    for raw in lines[1:]:
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, list) and len(item) == 3:
            events.append((float(item[0]), str(item[1]), str(item[2])))
    return Cast(header, events)


def find_casts(recordings: Path, session: str, channel: int | None = None) -> list[Path]:
    """The session's casts under var/recordings/YYYY/MM/DD/ (`paths.cast_file`), in channel
    order; only the one of `channel` when given."""
    found = []
    for path in recordings.glob(f"*/*/*/{session}-*.cast"):
        match = _CAST_NAME.match(path.name)
        if match and match["session"] == session:
            number = int(match["channel"])
            if channel is None or number == channel:
                found.append((number, path))
    return [path for _, path in sorted(found)]


def schedule(
    events: list[tuple[float, str, str]], speed: float, idle_limit: float
) -> Iterator[tuple[float, str]]:
    """(pause before, text) for each output event: pauses capped at `idle_limit`, then / speed."""
    previous = 0.0
    for moment, code, text in events:
        if code != "o":
            continue
        pause = min(max(moment - previous, 0.0), idle_limit) / speed
        previous = moment
        yield pause, text


def play(
    cast: Cast,
    out: BinaryIO,
    speed: float = 1.0,
    idle_limit: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write the cast's output to `out` in (scaled) real time."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    limit = idle_limit
    if limit is None:
        limit = float(cast.header.get("idle_time_limit") or DEFAULT_IDLE_LIMIT_SECONDS)
    for pause, text in schedule(cast.events, speed, max(limit, 0.0)):
        if pause > 0:
            sleep(pause)
        out.write(text.encode("utf-8", "replace"))
        out.flush()
