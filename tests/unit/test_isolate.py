"""Bridge port isolation (network/isolate.py): which ports change, read from a sysfs-shaped tree."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from sandtrap.config import parse_config
from sandtrap.network import hostwall, seal
from sandtrap.network.isolate import PortIsolation, bridge_ports, plan, set_isolated
from sandtrap.sandbox.sinknet import bridge_name


def _sysfs(root: Path, bridge: str, ports: dict[str, tuple[int, bool]]) -> None:
    (root / bridge / "brif").mkdir(parents=True)
    for name, (index, isolated) in ports.items():
        (root / bridge / "brif" / name).mkdir()
        (root / name / "brport").mkdir(parents=True)
        (root / name / "ifindex").write_text(f"{index}\n")
        (root / name / "brport" / "isolated").write_text("1\n" if isolated else "0\n")


def test_every_port_but_the_sinkholes_is_isolated() -> None:
    ports = {"vethsink": (7, False), "vetha": (8, False), "vethb": (9, True)}
    assert plan(ports, 7) == {"vetha": True}
    # A sinkhole port found isolated (it came back after a restart) is opened again.
    assert plan({"vethsink": (7, True), "vetha": (8, True)}, 7) == {"vethsink": False}


def test_an_unknown_sinkhole_fails_closed() -> None:
    ports = {"vethsink": (7, False), "vetha": (8, False)}
    assert plan(ports, None) == {"vethsink": True, "vetha": True}
    assert plan(ports, 99) == {"vethsink": True, "vetha": True}


def test_ports_are_read_and_written_in_sysfs_shape(tmp_path: Path) -> None:
    _sysfs(tmp_path, "stsinkabc", {"veth1": (11, False), "veth2": (12, True)})
    assert bridge_ports("stsinkabc", tmp_path) == {"veth1": (11, False), "veth2": (12, True)}
    set_isolated("veth1", True, tmp_path)
    assert bridge_ports("stsinkabc", tmp_path)["veth1"] == (11, True)
    # A port listed on the bridge whose files are gone (it went away) is skipped.
    (tmp_path / "stsinkabc" / "brif" / "veth3").mkdir()
    assert set(bridge_ports("stsinkabc", tmp_path)) == {"veth1", "veth2"}


class _Known(PortIsolation):
    """The sinkhole's port told, not looked up (the real lookup is the engine's: docker tests)."""

    answer: int | None = 11
    lookups: int = 0

    async def find_sinkhole(self) -> int | None:
        self.lookups += 1
        return self.answer


def test_a_pass_isolates_new_ports_and_then_only_lists(tmp_path: Path) -> None:
    config = parse_config({"sensor": "iso-test", "sandbox": {"network": "sinkhole"}})
    bridge = bridge_name(config.sensor)
    _sysfs(tmp_path, bridge, {"vsink": (11, False), "va": (12, False)})
    guard = _Known(engine=None, config=config, sys_net=tmp_path)  # type: ignore[arg-type]

    async def passes() -> None:
        await guard.step()
        assert bridge_ports(bridge, tmp_path) == {"vsink": (11, False), "va": (12, True)}
        assert guard.lookups == 1 and guard.isolated == 1
        # A new sandbox port: isolated on the next pass, with no new lookup.
        (tmp_path / bridge / "brif" / "vb").mkdir()
        (tmp_path / "vb" / "brport").mkdir(parents=True)
        (tmp_path / "vb" / "ifindex").write_text("13\n")
        (tmp_path / "vb" / "brport" / "isolated").write_text("0\n")
        await guard.step()
        assert bridge_ports(bridge, tmp_path)["vb"] == (13, True) and guard.lookups == 1
        # The sinkhole restarts on a new port: the old one is gone, the new one found and opened.
        shutil.rmtree(tmp_path / bridge / "brif" / "vsink")
        (tmp_path / bridge / "brif" / "vsink2").mkdir()
        (tmp_path / "vsink2" / "brport").mkdir(parents=True)
        (tmp_path / "vsink2" / "ifindex").write_text("14\n")
        (tmp_path / "vsink2" / "brport" / "isolated").write_text("1\n")
        guard.answer = 14
        guard._resolved_at = -1e9  # past the lookup throttle
        await guard.step()
        assert bridge_ports(bridge, tmp_path) == {
            "va": (12, True), "vb": (13, True), "vsink2": (14, False)
        }  # fmt: skip

    asyncio.run(passes())


def test_the_host_rules_drop_what_comes_from_the_bridge_but_not_what_it_bridges() -> None:
    rules = hostwall.rules("stsinkabc")
    assert {(tool, chain) for tool, chain, _ in rules} == {
        ("iptables", "INPUT"), ("iptables", "FORWARD"), ("ip6tables", "INPUT"),
        ("ip6tables", "FORWARD"),
    }  # fmt: skip
    for tool, _chain, match in rules:
        assert match[:2] == ["-i", "stsinkabc"] and match[-2:] == ["-j", "DROP"], (tool, match)
    forward = next(m for t, c, m in rules if (t, c) == ("iptables", "FORWARD"))
    assert forward[2:5] == ["!", "-o", "stsinkabc"]  # frames bridged to the sinkhole pass


DOCKER_OUTPUT = """\
-N DOCKER_OUTPUT
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:40383
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:59287
"""


def test_dockers_resolver_ports_are_read_and_closed_like_any_closed_port() -> None:
    ports = seal.resolver_ports(DOCKER_OUTPUT)
    assert ports == {"tcp": 40383, "udp": 59287}
    rules = seal.reject_rules(ports)
    assert [r[r.index("--dport") + 1] for r in rules] == ["40383", "59287"]
    assert [r[-1] for r in rules] == ["tcp-reset", "icmp-port-unreachable"]
    assert all(r[:3] == ["INPUT", "-i", "lo"] for r in rules)
    assert seal.resolver_ports("-A DOCKER_OUTPUT -j DNAT --to-destination 127.0.0.11:99999") == {}
    assert seal.resolver_ports("") == {}


SAVED = """\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:OUTPUT ACCEPT [0:0]
:DOCKER_OUTPUT - [0:0]
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:40383
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:59287
COMMIT
*filter
:INPUT ACCEPT [0:0]
COMMIT
"""


def test_a_fresh_namespace_misses_every_rule_and_gets_them_in_one_restore() -> None:
    missing = seal.missing_rules(SAVED)
    assert [table for table, _ in missing] == ["nat", "filter", "filter"]
    text = seal.restore_input(missing)
    assert text.splitlines() == [
        "*nat",
        "-I OUTPUT 1 -d 127.0.0.11/32 -j RETURN",
        "COMMIT",
        "*filter",
        "-I INPUT 1 -i lo -d 127.0.0.11/32 -p tcp -m tcp --dport 40383 -j REJECT "
        "--reject-with tcp-reset",
        "-I INPUT 1 -i lo -d 127.0.0.11/32 -p udp -m udp --dport 59287 -j REJECT "
        "--reject-with icmp-port-unreachable",
        "COMMIT",
    ]


def test_rules_already_there_in_iptables_saves_order_are_not_added_again() -> None:
    sealed = SAVED.replace(
        "-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT",
        "-A OUTPUT -d 127.0.0.11/32 -j RETURN\n-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT",
    ).replace(
        ":INPUT ACCEPT [0:0]\n",
        ":INPUT ACCEPT [0:0]\n"
        "-A INPUT -d 127.0.0.11/32 -i lo -p tcp -m tcp --dport 40383 -j REJECT "
        "--reject-with tcp-reset\n",
    )
    assert seal.missing_rules(sealed) == [("filter", seal.reject_rules({"udp": 59287})[0])]
    # A rule that differs in one option (another port, a negation) is not ours.
    other = sealed.replace("--dport 40383 -j REJECT", "! --dport 40383 -j REJECT")
    assert len(seal.missing_rules(other)) == 2
    assert seal.missing_rules("") == [("nat", seal.SKIP_DOCKER_DNAT)]
