"""Config loading: defaults, good files, and one clear line per problem for bad ones."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sandtrap.cli import cli
from sandtrap.config import Config, load_config, option_paths, parse_config, parse_listen
from sandtrap.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_safe() -> None:
    config = Config()
    assert config.ssh.listen == ["0.0.0.0:2222"]
    # A network that ends at the sinkhole (issue 16): nothing leaves, and `wget` works.
    assert config.sandbox.network == "sinkhole"
    # A warm floor, room to grow for a burst of distinct sources, logins that wait (issue 13).
    assert config.pool.size == 10
    assert config.pool.warm_ceiling() == 40
    assert config.pool.max_sandboxes == 200
    assert config.pool.share_per_source is True
    assert "SYS_ADMIN" not in config.sandbox.cap_add
    assert config.auth.accept_after_failures == 0


def test_the_sinkhole_subnet_follows_the_sensor() -> None:
    first = parse_config({"sensor": "sensor-a"}).sandbox.sinkhole.subnet
    assert first == parse_config({"sensor": "sensor-a"}).sandbox.sinkhole.subnet  # stable
    assert first != parse_config({"sensor": "sensor-b"}).sandbox.sinkhole.subnet
    assert first.endswith("/20") and ipaddress.ip_network(first).subnet_of(
        ipaddress.ip_network("10.128.0.0/9")
    )
    auto = {"sensor": "sensor-a", "sandbox": {"sinkhole": {"subnet": "auto"}}}
    assert parse_config(auto).sandbox.sinkhole.subnet == first
    given = {"sensor": "sensor-a", "sandbox": {"sinkhole": {"subnet": "10.7.0.0/16"}}}
    assert parse_config(given).sandbox.sinkhole.subnet == "10.7.0.0/16"
    # Two hundred sensor names: spread, not clustered.
    subnets = {parse_config({"sensor": f"s{n}"}).sandbox.sinkhole.subnet for n in range(200)}
    assert len(subnets) > 180


def test_runsc_defaults_to_no_network_and_refuses_the_sinkhole() -> None:
    assert parse_config({"sandbox": {"runtime": "runsc"}}).sandbox.network == "none"
    with pytest.raises(ConfigError, match="does not run under runtime 'runsc'"):
        parse_config({"sandbox": {"runtime": "runsc", "network": "sinkhole"}})


def test_none_path_gives_defaults() -> None:
    assert load_config(None) == Config()


@pytest.mark.parametrize("name", ["config.example.yaml", "config.minimal.yaml"])
def test_shipped_files_load(name: str) -> None:
    config = load_config(ROOT / "config" / name)
    assert config.ssh.listen


def test_issue_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
ssh:
  listen: ["127.0.0.1:2222"]
auth:
  credentials:
    - {username: root, password: "123456"}
  accept_after_failures: 0
pool:
  size: 3
sandbox:
  image: "sandtrap/target-debian:12"
storage:
  data_dir: "./var"
"""
    )
    config = load_config(path)
    assert config.ssh.listen == ["127.0.0.1:2222"]
    assert config.auth.credentials[0].password == "123456"
    assert config.storage.data_dir == Path("var")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"ssh": {"lisen": ["1.2.3.4:22"]}}, "ssh.lisen: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"pool": {"size": -1}}, "pool.size: Input should be greater than or equal to 0"),
        ({"pool": {"size": "three"}}, "pool.size: Input should be a valid integer"),
        ({"ssh": {"listen": ["nohost"]}}, "ssh.listen: listen address must look like host:port"),
        ({"ssh": {"listen": ["1.2.3.4:99999"]}}, "ssh.listen: listen port must be 0-65535"),
        ({"sandbox": {"network": "bridge"}}, "sandbox.network: Input should be 'none'"),
        ({"sandbox": {"cap_add": ["SYS_ADMIN"]}}, "capability SYS_ADMIN would let a sandbox"),
        ({"sandbox": {"runtime": "kata"}}, "sandbox.runtime: Input should be 'runc' or 'runsc'"),
        ({"sandbox": {"hostnames": ["Bad Name"]}}, "not a valid host name"),
        ({"sandbox": {"hostname_pattern": "{oops}"}}, "hostname_pattern may use only"),
        ({"pool": {"size": 10, "max_sandboxes": 5}}, "must not exceed max_sandboxes"),
        ({"auth": {"credentials": [{"username": "root"}]}}, "auth.credentials.0.password: Field"),
        ({"ssh": {"banner_version": "bad\nbanner"}}, "banner_version must be printable ASCII"),
    ],
)
def test_bad_values_name_their_key(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "f.yaml")
    assert any(expected in line for line in info.value.problems), info.value.problems
    assert all(line.startswith("f.yaml: ") for line in info.value.problems)


def test_several_problems_give_several_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"pool": {"size": -1}, "ssh": {"x": 1}, "extra": True})
    assert len(info.value.problems) == 3


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["a", "b"])


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ssh:\n  listen: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML (line" in info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_parse_listen_ipv6() -> None:
    assert parse_listen("[::1]:2222") == ("::1", 2222)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    with pytest.raises(ValueError, match="IPv6"):
        parse_listen("[::1]")


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.pool.size = 5  # type: ignore[misc]


def test_cli_validate_ok_and_bad(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text("pool: {size: 1}\n")
    result = runner.invoke(cli, ["config", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("pool: {size: -4, nope: 1}\n")
    result = runner.invoke(cli, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    assert "pool.size" in result.output
    assert "pool.nope: unknown key" in result.output


def test_cli_show_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pool: {size: 7}\nsensor: s1\n")
    result = CliRunner().invoke(cli, ["config", "show", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["pool"]["size"] == 7
    assert parse_config(shown) == load_config(path)


def test_cli_help_everywhere() -> None:
    runner = CliRunner()
    for args in (
        [],
        ["run"],
        ["config"],
        ["config", "validate"],
        ["config", "show"],
        ["image"],
        ["image", "build"],
    ):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.output


def test_every_option_is_in_example_and_docs() -> None:
    example = yaml.safe_load((ROOT / "config" / "config.example.yaml").read_text())
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for path in option_paths():
        node = example
        for part in path.split("."):
            assert part in node, f"config.example.yaml lacks {path}"
            node = node[part]
        assert f"`{path}`" in docs, f"docs/configuration.md lacks `{path}`"


def test_docs_list_no_unknown_options() -> None:
    import re

    docs = (ROOT / "docs" / "configuration.md").read_text()
    known = set(option_paths())
    sections = {p.split(".")[0] for p in known}
    listed = {
        m for m in re.findall(r"^\| `([a-z_.]+)`", docs, flags=re.MULTILINE) if m not in sections
    }
    assert listed <= known, listed - known


def test_warm_ceiling_stays_between_size_and_the_cap() -> None:
    assert Config.model_validate({"pool": {"size": 2, "max_sandboxes": 4}}).pool.warm_ceiling() == 4
    pool = Config.model_validate({"pool": {"size": 30, "max_warm": 5}}).pool
    assert pool.warm_ceiling() == 30
