"""One configuration for the producer, the stream job and the dashboard.

The file is TOML (the Ansible roles render it); any key can be overridden from
the environment as ``BDF__SECTION__KEY`` (e.g. ``BDF__KAFKA__TOPIC=test``).
Secrets never live in this file: it names credential files (mode 0600) instead.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

CONFIG_ENV = "BDF_CONFIG"
ENV_PREFIX = "BDF__"
DEFAULT_CONFIG_PATH = Path("/etc/bigdataflow/bigdataflow.toml")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Section):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1, repr=False)


class KafkaConnection(_Section):
    """How to reach and trust the brokers (what ``bdf.clients`` needs besides a login)."""

    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    # The deployment's CA (PEM): every client verifies the brokers' certificates against it.
    ca_file: Path | None = Field(default=None, validate_default=True)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, servers: list[str]) -> list[str]:
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return servers

    @field_validator("ca_file")
    @classmethod
    def _ca_with_tls(cls, ca_file: Path | None, info: ValidationInfo) -> Path | None:
        return _required_with_tls(ca_file, info.data.get("security_protocol") == "SASL_SSL", "SASL_SSL")


class KafkaSettings(KafkaConnection):
    credentials_file: Path
    topic: str = "user_profiles"
    dead_letter_topic: str = "user_profiles_dlq"
    consumer_group_prefix: str = "user-profiles-stream"


def _required_with_tls(value: Path | None, tls: bool, what: str) -> Path | None:
    if tls and value is None:
        raise ValueError(f"required with {what}: the CA file (PEM) that signed the servers' certificates")
    return value


class _TlsSwitch(_Section):
    """``tls`` and the CA (PEM) every client then verifies the servers' certificates against."""

    tls: bool = False
    ca_file: Path | None = Field(default=None, validate_default=True)

    @field_validator("ca_file")
    @classmethod
    def _ca_with_tls(cls, ca_file: Path | None, info: ValidationInfo) -> Path | None:
        return _required_with_tls(ca_file, bool(info.data.get("tls")), "tls = true")


class CassandraConnection(_TlsSwitch):
    hosts: list[str] = Field(min_length=1)
    port: int = Field(default=9042, gt=0, lt=65536)
    local_datacenter: str = "datacenter1"


class CassandraSettings(CassandraConnection):
    keyspace: str = "user_profiles"
    table: str = "profiles"
    credentials_file: Path
    # The Spark Cassandra Connector cannot read PEM: with tls it needs the same CA in a
    # PKCS12 trust store, and the store's password in a file (mode 0600).
    truststore_file: Path | None = None
    truststore_password_file: Path | None = None

    @model_validator(mode="after")
    def _truststore_with_tls(self) -> CassandraSettings:
        if self.tls and (self.truststore_file is None or self.truststore_password_file is None):
            raise ValueError(
                "tls = true needs truststore_file and truststore_password_file (a PKCS12 trust store"
                " holding ca_file, for the Spark Cassandra Connector)"
            )
        return self


class MongoConnection(_TlsSwitch):
    hosts: list[str] = Field(min_length=1, description="host:port of each member")
    auth_source: str = "admin"


class MongoSettings(MongoConnection):
    database: str = "user_profiles"
    credentials_file: Path


class KeySettings(_Section):
    key_file: Path


class StreamSettings(_Section):
    checkpoint_location: str = Field(min_length=1)
    trigger_interval: str = "1 second"
    # How often the counts changed since the last write go to MongoDB (absolute values):
    # the dashboard's aggregates lag by at most this much.
    aggregate_write_seconds: float = Field(default=10, gt=0)
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_offsets_per_trigger: int = Field(default=100_000, gt=0)
    max_message_bytes: int = Field(default=65_536, gt=0)
    # Tasks per stage of a micro-batch: one per executor core.
    parallelism: int = Field(default=2, gt=0)
    spark_master: str = "local[*]"
    # One write attempt waiting longer than this with no Spark task running is stalled:
    # the job exits and systemd starts it again (jobs/resilience.py StalledWriteWatchdog).
    # Tasks writing a large batch do not count; an outage is many attempts.
    stalled_write_seconds: int = Field(default=300, ge=30)
    # Source offsets to dead-letter unprocessed (jobs/quarantine.py, `bdf-dlq quarantine`).
    quarantine_file: Path = Path("/var/lib/bigdataflow/stream-quarantine.json")


class ProducerSettings(_Section):
    api_url: str = "https://randomuser.me/api/"
    api_version: Literal["1.4"] = "1.4"
    batch_size: int = Field(default=1000, ge=1, le=5000)
    nationalities: list[str] = Field(default_factory=list)
    seed: str | None = None
    max_requests_per_second: float = Field(default=1.0, gt=0)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0)


class DashboardSettings(_Section):
    refresh_seconds: int = Field(default=10, ge=1)
    # Where `python -m dashboard.app` listens; under systemd, gunicorn's --bind decides.
    host: str = "127.0.0.1"
    port: int = Field(default=8050, gt=0, lt=65536)
    # How long one refresh may wait for MongoDB before the page says it is unreachable/slow.
    mongodb_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    top_email_domains: int = Field(default=10, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_within_refresh(self) -> DashboardSettings:
        # The page asks again every refresh_seconds and drops an answer that comes after the
        # next question: a read that may take longer than that would never show its banner.
        if self.mongodb_timeout_seconds >= self.refresh_seconds:
            raise ValueError("mongodb_timeout_seconds must be shorter than refresh_seconds")
        return self


class Settings(_Section):
    kafka: KafkaSettings | None = None
    cassandra: CassandraSettings | None = None
    mongodb: MongoSettings | None = None
    keys: KeySettings | None = None
    stream: StreamSettings | None = None
    producer: ProducerSettings = ProducerSettings()
    dashboard: DashboardSettings = DashboardSettings()
    source: Path | None = Field(default=None, exclude=True)

    def require(self, *sections: str) -> None:
        """Fail early when a program needs a section the file does not have."""
        missing = [name for name in sections if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"{self.source}: missing section(s) {', '.join(f'[{m}]' for m in missing)}")


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``BDF__KAFKA__TOPIC=x`` -> ``{"kafka": {"topic": "x"}}``; JSON values are decoded."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_validation_error(error: ValidationError, subject: str) -> str:
    """``invalid <subject>:`` then one line per problem, named by its dotted location."""
    lines = [f"invalid {subject}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read, merge with the environment and validate; raise ConfigError on any problem."""
    environ = dict(os.environ if environ is None else environ)
    source = Path(path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {source} not found (set --config or {CONFIG_ENV})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    data = _merge(data, _env_overrides(environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"configuration in {source}")) from None
    return settings.model_copy(update={"source": source})


def check_private(path: Path) -> None:
    """Secrets files must be readable by their owner only (mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"secret file {path} is mode {stat.S_IMODE(mode):04o}; run: chmod 600 {path}")


def load_credentials(path: Path) -> Credentials:
    """A credentials file is TOML with ``username`` and ``password``, mode 0600."""
    check_private(path)
    try:
        return Credentials.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"configuration in {path}")) from None
