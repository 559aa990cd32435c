"""Pure helpers: percentiles, summaries, and figures that pair SandTrap with a peer.

No I/O here; the benchmark modules measure, these functions summarise and format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of a non-empty sample."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """A sample's size and its p50/p95/p99 (in the sample's unit)."""

    n: int
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
        )


@dataclass(frozen=True)
class Row:
    """One statistic of one figure: SandTrap's value and each peer's."""

    label: str
    ours: float
    peers: dict[str, float]


@dataclass
class Figure:
    """A benchmark figure: rows of SandTrap-vs-peer values, a unit, and what lower/higher means."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def peer_names(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names.extend(name for name in row.peers if name not in names)
        return names


def ratio(ours: float, peer: float) -> float:
    """SandTrap / peer; NaN when either is missing or the peer is zero."""
    if math.isnan(ours) or math.isnan(peer) or peer == 0:
        return math.nan
    return ours / peer


def fmt(value: float, unit: str = "") -> str:
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    text = f"{value:.{digits}f}"
    return f"{text} {unit}".rstrip()


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def table(figure: Figure) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a figure: statistic, SandTrap, then per peer its value and the ratio."""
    header = ["", "SandTrap"]
    for name in figure.peer_names:
        header += [name, f"SandTrap/{name}"]
    body: list[list[str]] = []
    for row in figure.rows:
        line = [row.label, fmt(row.ours, figure.unit)]
        for name in figure.peer_names:
            peer = row.peers.get(name, math.nan)
            line += [fmt(peer, figure.unit), fmt_ratio(ratio(row.ours, peer))]
        body.append(line)
    return header, body


def render_text(figure: Figure) -> str:
    """A figure as an aligned plain-text table, with its notes below."""
    header, body = table(figure)
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    better = "higher is better" if figure.higher_is_better else "lower is better"
    lines = [f"== {figure.title} ({better})"]
    for cells in [header, *body]:
        lines.append(
            "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
        )
    lines += [f"   note: {note}" for note in figure.notes]
    return "\n".join(lines)
