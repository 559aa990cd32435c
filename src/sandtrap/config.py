"""Configuration: pydantic models for the YAML file, with every default stated once, here.

Owns parsing and validation of the operator's file and the error messages for bad input. It reads
nothing at import time; callers build a `Config` directly (tests) or through `load_config(path)`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandtrap.errors import ConfigError
from sandtrap.limits import MaxStartups
from sandtrap.outputconfig import (
    AlertRule,
    CowrieOutput,
    HpfeedsOutput,
    MetricsConfig,
    OutputConfig,
    PostgresqlOutput,
    SyslogOutput,
    WebhookOutput,
    check_outputs,
)
from sandtrap.sandboxconfig import (
    DEFAULT_CAPABILITIES,
    DEFAULT_IMAGE,
    FORBIDDEN_CAPABILITIES,
    HOSTNAME_RE,
    PoolConfig,
    RetentionConfig,
    SandboxConfig,
    SinkholeConfig,
    WeightedImage,
    sensor_subnet,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_listen(value: str) -> tuple[str, int]:
    """Split a listen address `host:port` (IPv6 as `[::]:22`) into host and port.

    Raises:
        ValueError: the address or port is not usable.
    """
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"IPv6 listen address must look like [::1]:2222, got {value!r}")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"listen address must look like host:port, got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"listen host must be an IP address, got {host!r}") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen port must be 0-65535, got {port_text!r}")
    return host, int(port_text)


class SSHConfig(_Model):
    """The SSH front door."""

    listen: list[str] = Field(default_factory=lambda: ["0.0.0.0:2222"], min_length=1)
    login_grace_seconds: float = Field(default=120.0, gt=0, le=3600)
    max_auth_tries: int = Field(default=6, ge=1, le=100)
    auth_failure_delay_seconds: float = Field(default=2.0, ge=0, le=30)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    persona: Literal["debian12"] = "debian12"
    proxy_protocol_listen: list[str] = Field(
        default_factory=list,
        description="extra listen addresses that expect a PROXY protocol v1/v2 header from a load "
        "balancer before SSH; only the balancer may reach them (the header names the client)",
    )
    proxy_protocol_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    banner_version: str | None = Field(
        default=None,
        description="Software version sent in the identification string; None derives it from "
        "the persona (and the target image's openssh package when known).",
    )

    @field_validator("listen", "proxy_protocol_listen")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_listen(item)
        return value

    @field_validator("banner_version")
    @classmethod
    def _check_banner(cls, value: str | None) -> str | None:
        # RFC 4253 section 4.2: printable US-ASCII, no spaces in the version, max 255 bytes total.
        if value is not None and not re.fullmatch(r"[\x21-\x7e]+( [\x20-\x7e]+)?", value):
            raise ValueError(
                "banner_version must be printable ASCII, e.g. 'OpenSSH_9.2p1 Debian-2'"
            )
        return value


class LimitsConfig(_Model):
    """What one client, and all of them together, may take from the front (SECURITY.md)."""

    # Far above one source's MaxStartups `full`, so one flooding address cannot shut others out.
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    max_connections_per_ip: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="logged-in connections (each holds a sandbox) per source address",
    )
    # None: off. Refusing connections loses every password they would have tried (issue 13).
    connections_per_ip_per_minute: int | None = Field(default=None, ge=1, le=100_000)
    max_startups: str = Field(
        default="10:30:100",
        description="sshd's MaxStartups start:rate:full for unauthenticated connections, decided "
        "per source address",
    )
    refusal_report_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    refusal_report_max_sources: int = Field(default=10_000, ge=1, le=1_000_000)
    session_idle_timeout_seconds: float = Field(default=900.0, gt=0, le=7 * 86400)
    session_max_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    max_bytes_in: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_bytes_out: int = Field(default=256 * 1024 * 1024, ge=1024)

    @field_validator("max_startups")
    @classmethod
    def _check_max_startups(cls, value: str) -> str:
        MaxStartups.parse(value)
        return value


class Credential(_Model):
    """One username/password pair; password `*` matches any password of that user."""

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=0, max_length=1024)


class AuthConfig(_Model):
    """Which logins succeed. Every attempt is recorded whatever the outcome."""

    # Weak pairs that bots try first; a honeypot's whole point is to let them in.
    credentials: list[Credential] = Field(
        default_factory=lambda: [
            Credential(username="root", password="123456"),
            Credential(username="root", password="password"),
            Credential(username="admin", password="admin"),
        ]
    )
    deny: list[Credential] = Field(default_factory=list)
    accept_after_failures: int = Field(default=0, ge=0, le=1000)
    failure_scope: Literal["ip", "connection"] = "ip"
    remember_accepted: bool = True
    accept_public_keys: bool = False
    # Public-key policy (issue 19): the Nth distinct key a source offers (counted in
    # failure_scope) is accepted; keys listed by fingerprint ("SHA256:...") always are.
    accept_keys_after_offers: int = Field(default=0, ge=0, le=1000)
    accepted_key_fingerprints: list[str] = Field(default_factory=list)
    memory_ttl_seconds: float = Field(default=86400.0, gt=0)
    memory_max_ips: int = Field(default=100_000, ge=1)


class StorageConfig(_Model):
    data_dir: Path = Path("./var")
    log_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    log_backups: int = Field(default=10, ge=0, le=1000)


class AnalysisConfig(_Model):
    """Threat analysis (issue 19, docs/analysis.md); all offline."""

    # Triage of every captured artifact in one worker process (analysis/triager.py).
    triage: bool = True
    yara_rules: Path | None = None
    starter_rules: bool = True
    triage_queue_size: int = Field(default=1000, ge=1, le=100_000)
    triage_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    # Enrichment (analysis/enrich.py): operator-provided MaxMind-format files, read offline.
    geoip_country_db: Path | None = None
    geoip_asn_db: Path | None = None
    geoip_cache_size: int = Field(default=10_000, ge=1, le=10_000_000)
    attack_tags: bool = True
    # Anomaly scoring of closed sessions (analysis/anomaly.py): top (100 - percentile) %.
    anomaly: bool = True
    anomaly_percentile: float = Field(default=99.0, ge=50, lt=100)
    anomaly_min_history: int = Field(default=100, ge=5, le=1_000_000)
    anomaly_history_max: int = Field(default=5000, ge=10, le=1_000_000)
    anomaly_refit_every: int = Field(default=100, ge=1, le=1_000_000)
    # Unique decoy credentials planted in each warm sandbox (sandbox/honeytokens.py).
    honeytokens: bool = False


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def is_loopback_host(host: str) -> bool:
    """Whether a listen host is on this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(_Model):
    """`sandtrap web`, the analyst's console (docs/web.md): read-only, loopback by default."""

    listen: str = "127.0.0.1:8080"
    token: str | None = Field(default=None, min_length=16, max_length=1024)
    allowed_hosts: list[str] = Field(default_factory=list)
    page_size: int = Field(default=50, ge=1, le=200)
    live_interval_seconds: float = Field(default=2.0, ge=0.1, le=60)
    max_live_clients: int = Field(default=16, ge=1, le=1000)
    cache_seconds: float = Field(default=10.0, ge=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        if not is_loopback_host(parse_listen(self.listen)[0]) and self.token is None:
            raise ValueError(f"listen {self.listen} is not loopback: set web.token")
        return self


class Config(_Model):
    """The whole configuration; `Config()` is the safe default used when no file is given."""

    sensor: str = Field(default_factory=socket.gethostname, min_length=1, max_length=253)
    ssh: SSHConfig = Field(default_factory=SSHConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    # Issue 17: the outputs' sections (outputconfig.py holds their models and defaults).
    outputs: list[OutputConfig] = Field(default_factory=list)
    alerts: list[AlertRule] = Field(default_factory=list)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    @model_validator(mode="before")
    @classmethod
    def _sinkhole_subnet_of_sensor(cls, data: Any) -> Any:
        """`sandbox.sinkhole.subnet` absent or `auto`: the one chosen by the sensor's name."""
        if not isinstance(data, dict):
            return data
        sandbox = data.get("sandbox", {})
        sinkhole = sandbox.get("sinkhole", {}) if isinstance(sandbox, dict) else None
        if not isinstance(sinkhole, dict) or sinkhole.get("subnet", "auto") != "auto":
            return data
        sensor = data.get("sensor")
        if not isinstance(sensor, str) or not sensor:
            sensor = socket.gethostname()
        sinkhole = {**sinkhole, "subnet": sensor_subnet(sensor)}
        return {**data, "sandbox": {**sandbox, "sinkhole": sinkhole}}

    @model_validator(mode="after")
    def _outputs_agree(self) -> Config:
        check_outputs(self.outputs, self.alerts)
        return self

    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)


def with_sensor(config: Config, data: dict[str, Any], sensor: str) -> None:
    """Rename the sensor in `data` (a `model_dump` of `config`): a sinkhole subnet that was the
    old name's default follows the new name, so the two can run on one engine side by side."""
    data["sensor"] = sensor
    if config.sandbox.sinkhole.subnet == sensor_subnet(config.sensor):
        data["sandbox"]["sinkhole"]["subnet"] = sensor_subnet(sensor)


def _format_errors(source: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {message}")
    return lines


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML data.

    Raises:
        ConfigError: with one line per problem, each naming its key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_config(path: Path | None) -> Config:
    """Read and validate a YAML file; `None` gives the built-in defaults.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown keys or bad values.
    """
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    return parse_config(data, str(path))


def dump_config(config: Config) -> str:
    """The effective configuration as YAML, every option included."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def option_paths(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted option path of the model (used by docs checks)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(option_paths(annotation, f"{path}."))
        else:
            paths.append(path)
    return paths


__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_IMAGE",
    "FORBIDDEN_CAPABILITIES",
    "HOSTNAME_RE",
    "AlertRule",
    "AnalysisConfig",
    "AuthConfig",
    "Config",
    "CowrieOutput",
    "Credential",
    "HpfeedsOutput",
    "LimitsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PoolConfig",
    "PostgresqlOutput",
    "RetentionConfig",
    "SSHConfig",
    "SandboxConfig",
    "SinkholeConfig",
    "StorageConfig",
    "SyslogOutput",
    "WebConfig",
    "WebhookOutput",
    "WeightedImage",
    "dump_config",
    "is_loopback_host",
    "load_config",
    "option_paths",
    "parse_config",
    "parse_listen",
]
