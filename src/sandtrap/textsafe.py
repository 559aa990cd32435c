"""Making attacker-controlled text safe to show on an operator's terminal.

Control characters (C0, DEL, C1) and Unicode bidi/line separators are shown as visible escapes, so a
username like "root\\x1b]0;pwned\\x07" can never drive the analyst's terminal.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(value: str, limit: int | None = None) -> str:
    """`value` with every unsafe character replaced by a \\x.. / \\u.... escape."""
    text = _UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        value,
    )
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
