"""`python -m bench.web_bench`: the web console's page answer times with 100,000 sessions indexed.

Builds a synthetic index (tests/webdata.py's sessions, through the real index mapping), serves it
with real uvicorn on 127.0.0.1:0 and times sequential GETs of every page. With `--write FILE` the
table replaces the block between the markers in FILE (docs/performance.md), which the main
benchmark (`python -m bench --write`) keeps when it rewrites the page.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.webdata import session_records
from tests.webserver import ConsoleThread

from sandtrap.config import parse_config
from sandtrap.paths import DataLayout
from sandtrap.store.index import apply, connect

START = "<!-- web-bench:start -->"
END = "<!-- web-bench:end -->"
BUDGET_SECONDS = 1.0
# The overview of 30 days or all time counts every row of the period (top passwords and commands
# have no smaller summary): its budget uncached is larger, and the console caches it.
LONG_OVERVIEW_BUDGET_SECONDS = 2.5


def budget(path: str) -> float:
    overview = path.startswith(("/?", "/api/overview"))
    long = overview and ("period=30d" in path or "period=all" in path)
    return LONG_OVERVIEW_BUDGET_SECONDS if long else BUDGET_SECONDS


def build_index(data_dir: Path, sessions: int, seed: int = 11) -> tuple[str, str, int]:
    """`sessions` synthetic sessions over 60 days; returns (a session id, a digest, records).
    An index already in `data_dir` (from `--keep`) is reused as it is."""
    index = DataLayout(data_dir).index_db
    if index.exists():
        db = sqlite3.connect(index)
        try:
            sample, digest = db.execute("SELECT session, sha256 FROM artifacts LIMIT 1").fetchone()
            records = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            db.close()
        return str(sample), str(digest), records
    rng = random.Random(seed)
    now = datetime.now(UTC)
    db = connect(DataLayout(data_dir).index_db)
    db.execute("BEGIN")
    count, digest, sample = 0, "", ""
    for number in range(sessions):
        session = f"{number:06x}" + rng.randbytes(3).hex()
        start = now - timedelta(seconds=rng.randrange(60, 60 * 86400))
        records = list(session_records(rng, session, start, hostile=number == sessions // 2))
        count += apply(db, records)
        for record in records:
            if record["eventid"] == "sandbox.artifact":
                digest, sample = str(record["sha256"]), session
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return sample, digest, count


def pages(session: str, digest: str) -> list[str]:
    return [
        "/",
        "/?period=7d",
        "/?period=30d",
        "/?period=all",
        "/sessions",
        "/sessions?commands=yes",
        "/sessions?artifacts=yes",
        "/sessions?network=yes",
        "/sessions?username=root&since=7d",
        "/sessions?ip=203.0.113.7",
        "/sessions?page=200",
        f"/sessions/{session}",
        "/artifacts",
        f"/artifacts/{digest}",
        "/api/overview?period=30d",
        "/api/sessions?network=no&commands=yes",
    ]


def measure(url: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our own loopback server
            response.read()
            assert response.status == 200, (url, response.status)
        times.append(time.perf_counter() - began)
    return times


def run(sessions: int, repeat: int, keep: Path | None = None) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory(prefix="sandtrap-web-bench-") as tmp:
        data_dir = keep or Path(tmp)
        began = time.perf_counter()
        session, digest, records = build_index(data_dir, sessions)
        built = time.perf_counter() - began
        size_mb = DataLayout(data_dir).index_db.stat().st_size / 1e6
        # The overview cache off: every request counts afresh (what the first visitor waits).
        config = parse_config(
            {
                "sensor": "bench",
                "storage": {"data_dir": str(data_dir)},
                "web": {"cache_seconds": 0},
            }
        )
        rows = []
        within = True
        with ConsoleThread(config) as console:
            for path in pages(session, digest):
                measure(console.url + path, 1)  # warm the page cache once
                times = sorted(measure(console.url + path, repeat))
                median = statistics.median(times)
                worst = times[-1]
                limit = budget(path)
                ok = median <= limit
                within = within and ok
                rows.append(
                    f"| `{path}` | {median * 1000:.0f} | {worst * 1000:.0f} | {limit * 1000:.0f}"
                    f" | {'yes' if ok else 'NO'} |"
                )
    lines = [
        START,
        "## Web console: page answer times with 100,000 sessions",
        "",
        f"`python -m bench.web_bench` on this machine: {sessions:,} synthetic sessions "
        f"({records:,} events through the real index mapping, {size_mb:.0f} MB of SQLite"
        f"{f', built in {built:.0f} s' if built > 1 else ''}), served by `sandtrap web`'s "
        "uvicorn on 127.0.0.1; each page fetched "
        f"{repeat} times in a row after one warm-up, with the overview cache off "
        "(`web.cache_seconds: 0`: each answer counted afresh; with the default 10 s a repeated "
        "overview answers from memory). Budget: median <= "
        f"{BUDGET_SECONDS:.0f} s per page, {LONG_OVERVIEW_BUDGET_SECONDS} s for an overview of "
        f"30 days or all time ({'met' if within else 'NOT met'}). "
        f"Load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(a shared machine). Unit: ms; lower is better.",
        "",
        "| page | median | max | budget | within |",
        "|---|---|---|---|---|",
        *rows,
        END,
    ]
    return "\n".join(lines), within


def keep_section(path: Path, text: str) -> str:
    """`text` (a new report) with the web block of the existing `path` appended, if it had one."""
    if not path.exists():
        return text
    old = path.read_text()
    if START not in old or END not in old:
        return text
    block = old[old.index(START) : old.index(END) + len(END)]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(path: Path, block: str) -> None:
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_bench", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--write", type=Path, metavar="FILE", help="replace the block in FILE")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="build the index in DIR, kept")
    args = parser.parse_args(argv)
    block, within = run(args.sessions, args.repeat, args.keep)
    print(block)
    if args.write is not None:
        write_section(args.write, block)
        print(f"wrote {args.write}")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
