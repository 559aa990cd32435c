"""Webhook bodies: plain JSON, or Slack-, Discord- and Telegram-shaped chat messages; pure.

Chat texts hold attacker strings, so each preset neutralises what its receiver would interpret:
Slack's `&<>` (links, mentions), Discord's markdown and mentions (`allowed_mentions` empty, every
markdown character escaped), Telegram is sent without a parse mode. Control characters are made
visible (textsafe.py) and every text is cut to the receiver's length limit.
"""

from __future__ import annotations

import re
from typing import Any

from sandtrap.outputs.alerts import describe
from sandtrap.outputs.base import Record
from sandtrap.textsafe import safe_text

# The receivers' message size limits (characters).
LIMITS = {"slack": 3000, "discord": 2000, "telegram": 4096}
_DISCORD_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]()<@:-])")


def line(record: Record) -> str:
    """One line for people about a record: an alert's text, or a short description."""
    if str(record.get("eventid", "")).startswith("alert"):
        return safe_text(str(record.get("message", "")), 1000)
    return safe_text(describe("event", record), 1000)


def _join(lines: list[str], limit: int) -> str:
    out: list[str] = []
    used = 0
    for index, text in enumerate(lines):
        if used + len(text) + 1 > limit - 40:
            out.append(f"... and {len(lines) - index} more")
            break
        out.append(text)
        used += len(text) + 1
    return "\n".join(out)


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def discord_escape(text: str) -> str:
    return _DISCORD_MARKDOWN.sub(r"\\\1", text)


def body(preset: str, records: list[Record], *, sensor: str, chat_id: str | None) -> Any:
    """The JSON body of one POST for `records`."""
    if preset == "json":
        return {"sensor": sensor, "events": records}
    lines = [line(record) for record in records]
    header = f"SandTrap {sensor}"
    if preset == "slack":
        text = _join([slack_escape(header), *(slack_escape(t) for t in lines)], LIMITS["slack"])
        return {"text": text}
    if preset == "discord":
        escaped = [discord_escape(header), *(discord_escape(t) for t in lines)]
        return {"content": _join(escaped, LIMITS["discord"]), "allowed_mentions": {"parse": []}}
    text = _join([header, *lines], LIMITS["telegram"])
    return {"chat_id": chat_id, "text": text, "disable_web_page_preview": True}


__all__ = ["LIMITS", "body", "discord_escape", "line", "slack_escape"]
