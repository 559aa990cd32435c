"""The `outputs`, `alerts` and `metrics` sections of the configuration (issue 17).

Split from config.py for the module size bound; config.py composes them into `Config` and
re-exports them. Every default of these sections lives here once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# RFC 5424 section 6.2.1: facility names as syslog(3) spells them, with their codes.
FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "authpriv": 10,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_GLOB_RE = re.compile(r"[a-z0-9_.*?-]{1,80}")


def split_address(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:514`) of a remote receiver; host names allowed.

    Raises:
        ValueError: no port, or not 1-65535.
    """
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must look like host:port, got {value!r}")
    return host, int(port)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Output(_Model):
    """What every output has: a name, an event filter and a bounded queue."""

    name: str | None = Field(
        default=None, description="unique name (alerts name their output); default: the type"
    )
    eventids: list[str] = Field(
        default_factory=lambda: ["*"],
        description="shell-style patterns of our eventids to send ([] sends alerts only)",
    )
    exclude: list[str] = Field(default_factory=list)
    queue_size: int = Field(default=10_000, ge=10, le=1_000_000)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):
            raise ValueError("name must be 1-40 of a-z, 0-9, '-', '_'")
        return value

    @field_validator("eventids", "exclude")
    @classmethod
    def _check_globs(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _GLOB_RE.fullmatch(item):
                raise ValueError(f"not an eventid pattern: {item!r}")
        return value


class _RemoteOutput(_Output):
    """A sink across a network: what cannot be sent waits in a spool file, retried with backoff."""

    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="0: no spool")
    retry_initial_seconds: float = Field(default=1.0, gt=0, le=600)
    retry_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class CowrieOutput(_Output):
    """Cowrie's JSON lines (its `cowrie.json`), for pipelines built for Cowrie (T-Pot, ELK)."""

    type: Literal["cowrie"]
    path: Path = Field(
        default=Path("log/cowrie.json"),
        description="under storage.data_dir unless absolute (T-Pot: /data/cowrie/log/cowrie.json)",
    )
    uuid: str | None = Field(
        default=None,
        description="Cowrie's honeypot uuid field; None: generated once, kept in cowrie.uuid",
    )
    protocol: Literal["ssh"] = "ssh"


class SyslogOutput(_RemoteOutput):
    """RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587 framing) or a Unix socket."""

    type: Literal["syslog"]
    transport: Literal["udp", "tcp", "unix"] = "udp"
    address: str = Field(
        default="127.0.0.1:514", description="host:port (udp, tcp) or a socket path (unix)"
    )
    facility: Literal[
        "kern",
        "user",
        "daemon",
        "auth",
        "syslog",
        "authpriv",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ] = "local0"
    app_name: str = Field(default="sandtrap", pattern=r"^[\x21-\x7e]{1,48}$")
    framing: Literal["octet-counting", "lf"] = "octet-counting"
    format: Literal["sandtrap", "cowrie"] = "sandtrap"
    max_message_bytes: int = Field(default=8192, ge=480, le=65000)

    @model_validator(mode="after")
    def _check_address(self) -> SyslogOutput:
        if self.transport == "unix":
            if not self.address.startswith("/") or len(self.address) >= 108:
                raise ValueError("a unix syslog address is an absolute socket path (< 108 chars)")
        else:
            split_address(self.address)
        return self


class WebhookOutput(_RemoteOutput):
    """HTTP POSTs of JSON, batched; presets shape the body for Slack, Discord or Telegram."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    preset: Literal["json", "slack", "discord", "telegram"] = "json"
    chat_id: str | None = Field(default=None, description="telegram preset: the chat to post to")
    headers: dict[str, str] = Field(default_factory=dict)
    format: Literal["sandtrap", "cowrie"] = "sandtrap"
    batch_max_events: int = Field(default=100, ge=1, le=10_000)
    batch_max_seconds: float = Field(default=2.0, ge=0, le=600)

    @model_validator(mode="after")
    def _telegram_needs_chat(self) -> WebhookOutput:
        if self.preset == "telegram" and not self.chat_id:
            raise ValueError("preset telegram needs chat_id")
        return self


class PostgresqlOutput(_RemoteOutput):
    """Every event into one PostgreSQL database shared by a fleet (idempotent inserts)."""

    type: Literal["postgresql"]
    url: str = Field(
        pattern=r"^postgres(ql)?://\S+$",
        max_length=2048,
        description="libpq URL, e.g. postgresql://sandtrap:secret@db.example:5432/sandtrap",
    )
    batch_max_events: int = Field(default=500, ge=1, le=10_000)
    batch_max_seconds: float = Field(default=1.0, ge=0, le=600)


class HpfeedsOutput(_RemoteOutput):
    """Cowrie's `cowrie.sessions` summaries (one per session, at its end) to an hpfeeds broker."""

    type: Literal["hpfeeds"]
    address: str = Field(description="the broker's host:port")
    ident: str = Field(min_length=1, max_length=255)
    secret: str = Field(min_length=1, max_length=1024)
    channel: str = Field(default="cowrie.sessions", min_length=1, max_length=255)
    tls: bool = False

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_address(value)
        return value


AnyOutput = CowrieOutput | SyslogOutput | WebhookOutput | PostgresqlOutput | HpfeedsOutput
OutputConfig = Annotated[AnyOutput, Field(discriminator="type")]


def output_name(output: AnyOutput) -> str:
    return output.name or output.type


class AlertRule(_Model):
    """One alert: which events raise it, where it goes, how many per interval before a digest."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    # `when`, not `on`: YAML 1.1 reads a bare `on` key as the boolean true.
    when: Literal["login_success", "artifact", "network_callback", "honeytoken", "command", "event"]
    pattern: str | None = Field(
        default=None, max_length=1000, description="regex on the command line (when: command)"
    )
    eventids: list[str] = Field(
        default_factory=list, description="eventid patterns (when: event, network_callback, ...)"
    )
    output: str = Field(description="name of a syslog or webhook output")
    max_per_interval: int = Field(default=5, ge=0, le=10_000)
    interval_seconds: float = Field(default=300.0, gt=0, le=86400)

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regex: {exc}") from None
        return value

    @model_validator(mode="after")
    def _needs(self) -> AlertRule:
        if self.when == "command" and self.pattern is None:
            raise ValueError("when: command needs a pattern")
        if self.when == "event" and not self.eventids:
            raise ValueError("when: event needs eventids")
        return self


class MetricsConfig(_Model):
    """The Prometheus listener (off unless `listen` is set; keep it on loopback)."""

    listen: str | None = Field(default=None, description='e.g. "127.0.0.1:9464"; None: off')
    loop_lag_interval_seconds: float = Field(default=1.0, gt=0, le=60)


def check_outputs(outputs: list[AnyOutput], alerts: list[AlertRule]) -> None:
    """Names unique, cowrie paths distinct, every alert aimed at an existing syslog/webhook.

    Raises:
        ValueError: naming the first problem.
    """
    kinds: dict[str, str] = {}
    for output in outputs:
        name = output_name(output)
        if name in kinds:
            raise ValueError(f"outputs: two outputs are named {name!r}; give each a name")
        kinds[name] = output.type
    for rule in alerts:
        kind = kinds.get(rule.output)
        if kind is None:
            raise ValueError(f"alerts: rule {rule.name!r} names no output {rule.output!r}")
        if kind not in ("syslog", "webhook"):
            raise ValueError(f"alerts: rule {rule.name!r}: alerts go to syslog or webhook outputs")
    names = [rule.name for rule in alerts]
    if len(set(names)) != len(names):
        raise ValueError("alerts: rule names must be unique")


def resolve_path(data_dir: Path, path: Path) -> Path:
    """An output's path: absolute as given, relative under the data directory."""
    return path if path.is_absolute() else data_dir / path


__all__ = [
    "FACILITIES",
    "AlertRule",
    "AnyOutput",
    "CowrieOutput",
    "HpfeedsOutput",
    "MetricsConfig",
    "OutputConfig",
    "PostgresqlOutput",
    "SyslogOutput",
    "WebhookOutput",
    "check_outputs",
    "output_name",
    "resolve_path",
    "split_address",
]
