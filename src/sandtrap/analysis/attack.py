"""Rule-based MITRE ATT&CK tagging of a session's commands and events; pure.

Owns the rule table (docs/analysis.md prints it; a test keeps both equal) and matching one event
record against it. Emitting `session.attack` once per session and technique is
analysis/enrich.py's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_EVIDENCE_CHARS = 256


@dataclass(frozen=True)
class Technique:
    """An ATT&CK technique: `id` (T1105, T1098.004, ...), its name and tactic."""

    id: str
    name: str
    tactic: str


@dataclass(frozen=True)
class Rule:
    """`technique` applies when `pattern` matches a command (or a diff path / YARA rule name)."""

    technique: Technique
    on: str  # "command", "path" (sandbox.diff changes), "yara" (artifact.analysed), "auth"
    pattern: re.Pattern[str]


def _t(id_: str, name: str, tactic: str) -> Technique:
    return Technique(id_, name, tactic)


T1105 = _t("T1105", "Ingress Tool Transfer", "Command and Control")
T1098_004 = _t("T1098.004", "Account Manipulation: SSH Authorized Keys", "Persistence")
T1053_003 = _t("T1053.003", "Scheduled Task/Job: Cron", "Persistence")
T1082 = _t("T1082", "System Information Discovery", "Discovery")
T1033 = _t("T1033", "System Owner/User Discovery", "Discovery")
T1087_001 = _t("T1087.001", "Account Discovery: Local Account", "Discovery")
T1016 = _t("T1016", "System Network Configuration Discovery", "Discovery")
T1049 = _t("T1049", "System Network Connections Discovery", "Discovery")
T1057 = _t("T1057", "Process Discovery", "Discovery")
T1070_003 = _t("T1070.003", "Indicator Removal: Clear Command History", "Defense Evasion")
T1222_002 = _t("T1222.002", "File and Directory Permissions Modification: Linux", "Defense Evasion")
T1140 = _t("T1140", "Deobfuscate/Decode Files or Information", "Defense Evasion")
T1562_001 = _t("T1562.001", "Impair Defenses: Disable or Modify Tools", "Defense Evasion")
T1059_004 = _t("T1059.004", "Command and Scripting Interpreter: Unix Shell", "Execution")
T1136_001 = _t("T1136.001", "Create Account: Local Account", "Persistence")
T1098 = _t("T1098", "Account Manipulation", "Persistence")
T1552_001 = _t("T1552.001", "Unsecured Credentials: Credentials In Files", "Credential Access")
T1552_004 = _t("T1552.004", "Unsecured Credentials: Private Keys", "Credential Access")
T1496 = _t("T1496", "Resource Hijacking", "Impact")
T1110_001 = _t("T1110.001", "Brute Force: Password Guessing", "Credential Access")

# A command word at the start of a pipeline segment (after ; | & && || $( ` or sudo/env).
_W = r"(?:^|[;&|(`]\s*|\b(?:sudo|env|nohup|busybox)\s+)"


def _cmd(words: str) -> str:
    return _W + r"(?:\S*/)?(?:" + words + r")(?=\s|$|[;&|)`])"


RULES: tuple[Rule, ...] = (
    Rule(T1105, "command", re.compile(_cmd(r"wget|curl|tftp|ftpget|lwp-download|fetch"))),
    Rule(T1105, "command", re.compile(r"\b(?:scp|sftp|rsync)\b.*:|/dev/tcp/")),
    Rule(T1098_004, "command", re.compile(r"authorized_keys")),
    Rule(T1098_004, "path", re.compile(r"/authorized_keys2?$")),
    Rule(T1053_003, "command", re.compile(_cmd("crontab") + r"|/etc/cron|/var/spool/cron")),
    Rule(T1053_003, "path", re.compile(r"^/(?:etc/cron|var/spool/cron)")),
    Rule(T1082, "command", re.compile(_cmd(r"uname|lscpu|hostnamectl|dmidecode|lspci|free|nproc"))),
    Rule(
        T1082, "command", re.compile(r"/proc/(?:cpuinfo|meminfo|version)|/etc/(?:os|lsb)-release")
    ),
    Rule(T1033, "command", re.compile(_cmd(r"whoami|id|w|who|last|users"))),
    Rule(T1087_001, "command", re.compile(r"/etc/(?:passwd|shadow|group)\b|getent\s+passwd")),
    Rule(T1016, "command", re.compile(_cmd(r"ifconfig|ip\s+(?:a|addr|r|route|link)|route|arp"))),
    Rule(T1049, "command", re.compile(_cmd(r"netstat|ss|lsof\s+-i"))),
    Rule(T1057, "command", re.compile(_cmd(r"ps|top|pgrep|pstree|htop"))),
    Rule(
        T1070_003,
        "command",
        re.compile(r"history\s+-c|unset\s+HISTFILE|HISTFILE=/dev/null|HISTSIZE=0|bash_history"),
    ),
    Rule(T1222_002, "command", re.compile(_cmd(r"chmod|chattr|chown"))),
    Rule(T1140, "command", re.compile(r"base64\s+(?:-d|--decode)|openssl\s+enc\s+.*-d|xxd\s+-r")),
    Rule(
        T1562_001,
        "command",
        re.compile(
            r"setenforce\s+0|ufw\s+disable|iptables\s+-F|systemctl\s+(?:stop|disable)\s+"
            r"(?:firewalld|ufw|apparmor|auditd)|service\s+(?:iptables|firewalld)\s+stop"
        ),
    ),
    Rule(
        T1059_004,
        "command",
        re.compile(r"\|\s*(?:ba|da|z)?sh\b|" + _cmd(r"(?:ba|da|z)?sh\s+(?:-c\b|\S+\.sh)")),
    ),
    Rule(T1136_001, "command", re.compile(_cmd(r"useradd|adduser"))),
    Rule(T1098, "command", re.compile(_cmd(r"passwd|chpasswd|usermod"))),
    Rule(
        T1552_001,
        "command",
        re.compile(
            r"\.aws/credentials|\.git-credentials|(?:^|[\s/])\.env\b|\.netrc|wp-config\.php"
        ),
    ),
    Rule(T1552_004, "command", re.compile(r"\.ssh/id_(?:rsa|dsa|ecdsa|ed25519)\b|-name\s+id_rsa")),
    Rule(T1496, "command", re.compile(r"xmrig|minerd|cpuminer|stratum\+(?:tcp|ssl)://|nicehash")),
    Rule(T1496, "yara", re.compile(r"^SandTrap_Coin_Miner$")),
    Rule(T1105, "yara", re.compile(r"^SandTrap_Shell_Dropper$")),
    Rule(T1098_004, "yara", re.compile(r"^SandTrap_SSH_Key_Implant$")),
    Rule(T1053_003, "yara", re.compile(r"^SandTrap_Cron_Persistence$")),
    # An accepted password after failed ones in the same session: guessing that worked.
    Rule(T1110_001, "auth", re.compile(r"^success-after-failures$")),
)

TECHNIQUES: dict[str, Technique] = {rule.technique.id: rule.technique for rule in RULES}


@dataclass(frozen=True)
class Tag:
    """One technique seen in one event: what matched (`evidence`) and in which event."""

    technique: Technique
    evidence: str
    source: str


def _subjects(record: dict[str, Any], auth_failures: int) -> list[tuple[str, str]]:
    """(rule kind, text) pairs an event offers to the rules."""
    eventid = record.get("eventid")
    if eventid in ("session.command", "session.exec"):
        return [("command", str(record.get("input") or ""))]
    if eventid == "sandbox.diff":
        return [
            ("path", str(change.get("path", "")))
            for change in record.get("changes") or []
            if isinstance(change, dict) and change.get("kind") != "deleted"
        ]
    if eventid == "artifact.analysed":
        return [("yara", str(name)) for name in record.get("yara") or []]
    if eventid == "auth.success" and record.get("method") == "password" and auth_failures:
        return [("auth", "success-after-failures")]
    return []


def tag(record: dict[str, Any], auth_failures: int = 0) -> list[Tag]:
    """The techniques an event record shows, each once, in rule order.

    `auth_failures` is how many attempts the session had failed before this one (auth rules).
    """
    found: dict[str, Tag] = {}
    for kind, text in _subjects(record, auth_failures):
        for rule in RULES:
            if rule.on != kind or rule.technique.id in found:
                continue
            if rule.pattern.search(text):
                evidence = text[:MAX_EVIDENCE_CHARS]
                found[rule.technique.id] = Tag(rule.technique, evidence, str(record.get("eventid")))
    return list(found.values())


__all__ = ["RULES", "TECHNIQUES", "Rule", "Tag", "Technique", "tag"]
