"""Tables of the threat-analysis commands (`sandtrap artifacts`, `sandtrap clusters`); attacker
text escaped as in analysis/render.py, whose helpers these use."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from sandtrap.analysis.render import _table, cell


def _short(values: list[str] | None, count: int = 3) -> str:
    values = values or []
    more = f" (+{len(values) - count})" if len(values) > count else ""
    return ", ".join(values[:count]) + more


def artifacts_table(rows: list[dict[str, Any]]) -> Table:
    columns = ("sha256", "last seen", "sessions", "size", "path", "type", "arch", "yara", "urls")
    return _table(
        f"{len(rows)} artifact(s)",
        columns,
        [
            (
                r["sha256"][:16],
                (r["last_seen"] or "")[:19].replace("T", " "),
                r["sessions"],
                r["size"],
                r["path"],
                (r["magic"] or "-")[:60] if r["analysed"] else "(not analysed)",
                r["elf_arch"],
                _short(r["yara"]),
                _short(r["urls"], 2),
            )
            for r in rows
        ],
    )


def artifact_view(detail: dict[str, Any]) -> Group:
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("sha256", cell(detail["sha256"]))
    analysis = detail["analysis"] or {}
    if not analysis:
        info.add_row("analysis", cell("not analysed yet"))
    for key in ("md5", "sha1", "size", "magic", "mime", "elf_arch", "ssdeep", "tlsh", "error"):
        if analysis.get(key) is not None:
            info.add_row(key, cell(analysis[key]))
    for key in ("yara", "urls", "ips", "domains"):
        if analysis.get(key):
            info.add_row(key, cell("\n".join(analysis[key])))
    seen = _table(
        "seen in",
        ("session", "time", "source IP", "user", "path"),
        [
            (s["session"], (s["timestamp"] or "")[:19], s["src_ip"], s["username"], s["path"])
            for s in detail["seen"]
        ],
    )
    return Group(info, seen)


def techniques_table(rows: list[dict[str, Any]]) -> Table:
    return _table(
        f"{len(rows)} technique(s)",
        ("technique", "name", "tactic", "sessions", "last seen", "example"),
        [
            (
                r["technique"],
                r["name"],
                r["tactic"],
                r["sessions"],
                (r["last_seen"] or "")[:19].replace("T", " "),
                (r["example"] or "")[:80],
            )
            for r in rows
        ],
    )


def clusters_table(records: list[dict[str, Any]]) -> Table:
    def ties(record: dict[str, Any]) -> str:
        parts = []
        for kind, values in record["ties"].items():
            parts.append(f"{kind}: {_short(list(values), 2)}")
        return "; ".join(parts)

    return _table(
        f"{len(records)} cluster(s)",
        ("cluster", "sessions", "sources", "first seen", "last seen", "tied by", "members"),
        [
            (
                r["id"],
                r["size"],
                _short(r["sources"], 3),
                r["first_seen"][:19].replace("T", " "),
                r["last_seen"][:19].replace("T", " "),
                ties(r),
                _short([m["session"] for m in r["members"]], 4),
            )
            for r in records
        ],
    )


def anomalies_table(rows: list[dict[str, Any]]) -> Table:
    def strongest(features: dict[str, Any]) -> str:
        keys = ("commands", "novelty", "bytes_in", "bytes_out", "duration", "artifacts")
        return ", ".join(f"{k}={features[k]:.3g}" for k in keys if k in features)

    return _table(
        f"{len(rows)} anomalous session(s)",
        ("session", "time", "score", "threshold", "source IP", "user", "features"),
        [
            (
                r["session"],
                (r["timestamp"] or "")[:19].replace("T", " "),
                f"{r['score']:.3f}",
                f"{r['threshold']:.3f}",
                r["src_ip"],
                r["username"],
                strongest(r["features"]),
            )
            for r in rows
        ],
    )


__all__ = [
    "anomalies_table",
    "artifact_view",
    "artifacts_table",
    "clusters_table",
    "techniques_table",
]
