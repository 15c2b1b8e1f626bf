"""The producer against the offline source over real HTTP, with an in-memory publisher."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import requests
from click.testing import CliRunner

from bdf import clients
from bdf.config import Credentials, KafkaSettings, ProducerSettings
from bdf.keyring import message_part, new_keyring
from jobs import producer
from jobs.message_crypto import load_message_keys
from jobs.producer import (
    SECRET_LOGIN_FIELDS,
    FetchError,
    KafkaPublisher,
    RandomUserClient,
    RateLimiter,
    kafka_config,
    message_key,
    parse_retry_after,
    produce,
    stop_on_signals,
    without_secrets,
)
from jobs.randomuser_server import FAULT_KINDS, Faults, generate_users, running


class MemoryPublisher:
    """Keeps messages in a list; every ``fail_every``-th one counts as a failed delivery."""

    def __init__(self, fail_every: int = 0, on_publish=None) -> None:
        self.messages: list[tuple[str | None, bytes]] = []
        self.sent = 0
        self.failed = 0
        self.flushed = False
        self._fail_every = fail_every
        self._on_publish = on_publish

    def publish(self, key: str | None, value: bytes) -> None:
        self.messages.append((key, value))
        if self._fail_every and len(self.messages) % self._fail_every == 0:
            self.failed += 1
        else:
            self.sent += 1
        if self._on_publish:
            self._on_publish(self)

    def flush(self) -> None:
        self.flushed = True


class RequestLog:
    """Arrival time and query of every request the server sees."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, dict[str, str]]] = []

    def __call__(self, path: str) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        self.entries.append((time.monotonic(), query))

    @property
    def pages(self) -> list[int]:
        return [int(q["page"]) for _, q in self.entries]


def settings_for(url: str, **overrides: Any) -> ProducerSettings:
    values = {
        "api_url": url,
        "batch_size": 100,
        "seed": "producer-test",
        "max_requests_per_second": 1000.0,
        "request_timeout_seconds": 5.0,
        "max_retries": 3,
    }
    return ProducerSettings(**{**values, **overrides})


def client_for(settings: ProducerSettings, stop: threading.Event | None = None) -> RandomUserClient:
    return RandomUserClient(settings, stop, backoff_base=0.001, backoff_cap=0.01)


def expected_users(seed: str, batch_size: int, count: int) -> list[dict[str, Any]]:
    pages = -(-count // batch_size)
    users = [u for page in range(1, pages + 1) for u in generate_users(batch_size, seed, page)]
    return users[:count]


def without_ages(user: dict[str, Any]) -> dict[str, Any]:
    """Ages follow the clock; everything else must match exactly."""
    return {**user, "dob": user["dob"]["date"], "registered": user["registered"]["date"]}


# --- end to end over HTTP -------------------------------------------------------------------


def test_retries_through_every_injected_fault_and_publishes_exactly_count_in_order():
    requests_seen = RequestLog()
    faults = Faults(first=len(FAULT_KINDS), rate=0.25, seed=11, delay_seconds=1.0, retry_after_seconds=0)
    with running(faults=faults, on_request=requests_seen) as server:
        settings = settings_for(server.url, request_timeout_seconds=0.3, max_retries=len(FAULT_KINDS) + 4)
        publisher = MemoryPublisher()
        published = produce(client_for(settings), publisher, 1050, settings.batch_size, threading.Event())

    assert faults.injected.keys() == set(FAULT_KINDS)
    assert published == len(publisher.messages) == 1050
    values = [orjson.loads(value) for _, value in publisher.messages]
    assert all(isinstance(v, dict) for v in values)  # one profile per message, not a batch
    assert [key for key, _ in publisher.messages] == [v["login"]["uuid"] for v in values]
    # Nothing dropped, nothing duplicated, no partial batch: the exact seeded stream.
    expected = expected_users("producer-test", 100, 1050)
    assert [without_ages(v) for v in values] == [without_ages(without_secrets(u)) for u in expected]
    # A failed page is asked for again, never skipped.
    assert sorted(set(requests_seen.pages)) == list(range(1, 12))
    assert requests_seen.pages == sorted(requests_seen.pages)


def test_requests_go_to_the_pinned_version_with_batch_nat_seed_and_page():
    requests_seen = RequestLog()
    with running(on_request=requests_seen) as server:
        settings = settings_for(server.url, batch_size=40, nationalities=["FI", "UA"], seed="params")
        publisher = MemoryPublisher()
        produce(client_for(settings), publisher, 100, settings.batch_size, threading.Event())
    queries = [q for _, q in requests_seen.entries]
    assert queries == [
        {"results": "40", "nat": "FI,UA", "seed": "params", "page": "1"},
        {"results": "40", "nat": "FI,UA", "seed": "params", "page": "2"},
        {"results": "20", "nat": "FI,UA", "seed": "params", "page": "3"},
    ]
    assert {orjson.loads(v)["nat"] for _, v in publisher.messages} == {"FI", "UA"}


def test_client_builds_the_versioned_url_from_the_base():
    settings = ProducerSettings(api_url="https://randomuser.me/api")
    assert RandomUserClient(settings).url == "https://randomuser.me/api/1.4/"


def test_without_a_seed_no_seed_or_page_is_sent():
    requests_seen = RequestLog()
    with running(on_request=requests_seen) as server:
        settings = settings_for(server.url, seed=None, batch_size=10)
        produce(client_for(settings), MemoryPublisher(), 20, 10, threading.Event())
    assert [q for _, q in requests_seen.entries] == [{"results": "10"}, {"results": "10"}]


def test_gives_up_after_max_retries_and_sends_no_more_requests():
    requests_seen = RequestLog()
    with running(faults=Faults(rate=1.0, kinds=("500",)), on_request=requests_seen) as server:
        settings = settings_for(server.url, max_retries=2)
        publisher = MemoryPublisher()
        with pytest.raises(FetchError, match="giving up after 3 attempts"):
            produce(client_for(settings), publisher, 100, 100, threading.Event())
    assert len(requests_seen.entries) == 3
    assert publisher.messages == []


def test_error_answer_with_http_200_is_retried_not_published():
    with running(faults=Faults(first=2, kinds=("error",))) as server:
        settings = settings_for(server.url, batch_size=10)
        publisher = MemoryPublisher()
        produce(client_for(settings), publisher, 10, 10, threading.Event())
    assert len(publisher.messages) == 10
    assert all("error" not in orjson.loads(v) for _, v in publisher.messages)


def test_client_error_is_not_retried():
    requests_seen = RequestLog()
    with running(on_request=requests_seen) as server:
        settings = settings_for(server.url, nationalities=["XX"])
        with pytest.raises(FetchError, match=r"HTTP 400.*XX"):
            produce(client_for(settings), MemoryPublisher(), 10, 10, threading.Event())
    assert len(requests_seen.entries) == 1


class TimedSession(requests.Session):
    """Records when each request leaves the client (the instant the rate limit governs)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(time.monotonic())
        return super().get(*args, **kwargs)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_rate_limit_spaces_every_request_including_retries():
    requests_seen = RequestLog()
    session = TimedSession()
    with running(faults=Faults(first=2, kinds=("503",)), on_request=requests_seen) as server:
        settings = settings_for(server.url, batch_size=5, max_requests_per_second=10.0)
        client = RandomUserClient(settings, session=session, backoff_base=0.001, backoff_cap=0.01)
        produce(client, MemoryPublisher(), 25, 5, threading.Event())
    assert len(session.sent) == len(requests_seen.entries) == 7  # 5 batches + 2 retries
    assert min(gaps(session.sent)) >= 0.1 - 0.005  # no two requests closer than 1/rate
    # The server saw the same pace (its clock adds scheduling jitter, so judge the whole run).
    first, last = requests_seen.entries[0][0], requests_seen.entries[-1][0]
    assert last - first >= 6 * 0.1 - 0.05


def test_retry_after_header_is_honoured():
    session = TimedSession()
    with running(faults=Faults(first=1, kinds=("429",), retry_after_seconds=1)) as server:
        settings = settings_for(server.url, batch_size=5)
        client = RandomUserClient(settings, session=session, backoff_base=0.001, backoff_cap=0.01)
        produce(client, MemoryPublisher(), 5, 5, threading.Event())
    assert len(session.sent) == 2
    assert session.sent[1] - session.sent[0] >= 1.0 - 0.005


# --- pieces ------------------------------------------------------------------------------------


def test_rate_limiter_waits_one_interval_between_calls():
    now = [100.0]
    waits: list[float] = []

    class FakeStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            now[0] += timeout or 0.0
            return False

    limiter = RateLimiter(4.0, FakeStop(), clock=lambda: now[0])
    limiter.wait()
    limiter.wait()
    now[0] += 1.0  # idle for a while: no credit is saved up for a burst
    limiter.wait()
    limiter.wait()
    assert waits == [0.25, 0.25]


def test_parse_retry_after_accepts_seconds_and_http_dates_and_caps():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("99999") == producer.RETRY_AFTER_CAP_SECONDS
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(future) <= 30


def test_user_without_uuid_is_published_with_a_null_key():
    users = generate_users(3, "no-uuid")
    del users[1]["login"]["uuid"]
    users[2]["login"] = None

    class Stub:
        def fetch(self, size: int, page: int = 1) -> list[Any]:
            return users[:size]

    publisher = MemoryPublisher()
    produce(Stub(), publisher, 3, 3, threading.Event())
    assert [k for k, _ in publisher.messages] == [users[0]["login"]["uuid"], None, None]
    assert [orjson.loads(v) for _, v in publisher.messages] == [without_secrets(user) for user in users]


def test_account_secrets_never_leave_the_producer_and_nothing_else_changes():
    users = generate_users(4, "secrets")

    class Stub:
        def fetch(self, size: int, page: int = 1) -> list[Any]:
            return users[:size]

    publisher = MemoryPublisher()
    produce(Stub(), publisher, 4, 4, threading.Event())
    published = [orjson.loads(value) for _, value in publisher.messages]
    for user, message in zip(users, published, strict=True):
        assert not set(SECRET_LOGIN_FIELDS) & set(message["login"])
        assert message["login"] == {k: v for k, v in user["login"].items() if k not in SECRET_LOGIN_FIELDS}
        assert message | {"login": None} == user | {"login": None}
    assert all(set(SECRET_LOGIN_FIELDS) <= set(user["login"]) for user in users)  # the source sends them


def test_message_key_ignores_non_string_uuid_and_non_objects():
    assert message_key({"login": {"uuid": 42}}) is None
    assert message_key(["not", "a", "profile"]) is None


def test_stop_request_finishes_the_fetched_batch_and_fetches_no_more():
    stop = threading.Event()
    requests_seen = RequestLog()
    with running(on_request=requests_seen) as server:
        settings = settings_for(server.url, batch_size=50)
        publisher = MemoryPublisher(on_publish=lambda p: stop.set())  # stop after the first message
        published = produce(client_for(settings, stop), publisher, 0, 50, stop)
    assert published == len(publisher.messages) == 50
    assert len(requests_seen.entries) == 1


def test_sigterm_sets_the_stop_event_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) == before


def fake_credentials() -> Credentials:
    return Credentials(username=f"user-{secrets.token_hex(4)}", password=secrets.token_urlsafe(16))


def test_kafka_config_is_the_clients_one_idempotent_and_acks_all(tmp_path):
    credentials = fake_credentials()
    kafka = KafkaSettings(
        bootstrap_servers=["broker-a.invalid:9093", "broker-b.invalid:9093"],
        credentials_file=tmp_path / "kafka.toml",
    )
    config = kafka_config(kafka, credentials)
    assert clients.kafka_config(kafka, credentials).items() <= config.items()  # tests/unit/test_clients.py
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["compression.type"] in ("lz4", "zstd") and config["linger.ms"] > 0


def test_kafka_publisher_counts_undeliverable_messages_as_failed(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kafka = KafkaSettings(bootstrap_servers=[f"127.0.0.1:{port}"], credentials_file=tmp_path / "unused.toml")
    config = {**kafka_config(kafka, fake_credentials()), "message.timeout.ms": 300}
    publisher = KafkaPublisher(config, "t", flush_timeout=10)
    for n in range(3):
        publisher.publish(f"key-{n}", b"{}")
    publisher.flush()
    assert (publisher.sent, publisher.failed) == (0, 3)


# --- the command line --------------------------------------------------------------------------


def write_config(tmp_path: Path, producer_section: str) -> Path:
    """A configuration whose key file is the message part alone, as on the producer's host."""
    key_file = tmp_path / "message-keys.json"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, json.dumps(message_part(new_keyring())).encode())
        os.close(fd)
    path = tmp_path / "bigdataflow.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = ["127.0.0.1:9092"]
credentials_file = "{tmp_path / "kafka.toml"}"
topic = "profiles-test"

[keys]
key_file = "{key_file}"

[producer]
{producer_section}
""",
        encoding="utf-8",
    )
    return path


def run_cli(args: list[str], env: dict[str, str] | None = None):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(producer.main, args, env={"BDF_CONFIG": None, **(env or {})})
    finally:  # main() points logging at the runner's stream, which closes afterwards
        root.handlers[:] = handlers
        root.setLevel(level)


def test_cli_publishes_count_encrypted_and_logs_only_counts(tmp_path, monkeypatch):
    publisher = MemoryPublisher()
    monkeypatch.setattr(producer, "open_publisher", lambda kafka: publisher)
    with running() as server:
        config = write_config(tmp_path, f'api_url = "{server.url}"\nbatch_size = 60\nseed = "cli"')
        result = run_cli(["--config", str(config), "--count", "150"])
    assert result.exit_code == 0, result.output
    assert len(publisher.messages) == 150 and publisher.flushed
    final = orjson.loads(result.output.strip().splitlines()[-1])
    assert (final["published"], final["sent"], final["failed"]) == (150, 150, 0)
    keys = load_message_keys(tmp_path / "message-keys.json")
    for key, value in publisher.messages:
        user = orjson.loads(keys.open(value, "profiles-test"))
        assert key == user["login"]["uuid"]
        for secret in (user["email"], user["name"]["last"], user["phone"], user["location"]["city"]):
            assert secret not in result.output  # no personal data in the logs
            assert secret.encode() not in value  # nor readable in the message


def test_cli_without_a_keys_section_exits_2_and_publishes_nothing(tmp_path, monkeypatch):
    publisher = MemoryPublisher()
    monkeypatch.setattr(producer, "open_publisher", lambda kafka: publisher)
    config = write_config(tmp_path, "batch_size = 5")
    config.write_text(re.sub(r"\[keys\]\nkey_file = .*\n", "", config.read_text()), encoding="utf-8")
    result = run_cli(["--config", str(config), "--count", "5"])
    assert (result.exit_code, publisher.messages) == (2, [])
    assert "missing section(s) [keys]" in result.output


def test_cli_exits_1_and_reports_failed_deliveries(tmp_path, monkeypatch):
    publisher = MemoryPublisher(fail_every=10)
    monkeypatch.setattr(producer, "open_publisher", lambda kafka: publisher)
    with running() as server:
        config = write_config(tmp_path, f'api_url = "{server.url}"\nbatch_size = 50')
        result = run_cli(["--config", str(config), "--count", "50"])
    assert result.exit_code == 1
    assert "sent=45 failed=5" in result.output


def test_cli_exits_1_when_the_api_gives_up(tmp_path, monkeypatch):
    monkeypatch.setattr(producer, "open_publisher", lambda kafka: MemoryPublisher())
    with running(faults=Faults(rate=1.0, kinds=("503",))) as server:
        config = write_config(tmp_path, f'api_url = "{server.url}"\nmax_retries = 0')
        result = run_cli(["--config", str(config), "--count", "5"])
    assert result.exit_code == 1
    assert "giving up after 1 attempts" in result.output


def test_config_error_exits_2_and_names_the_key(tmp_path):
    config = write_config(tmp_path, "batch_size = 0")
    result = run_cli(["--config", str(config), "--count", "1"])
    assert result.exit_code == 2
    assert "producer.batch_size" in result.output
    assert "Traceback" not in result.output


def test_config_error_from_environment_override_exits_2(tmp_path):
    config = write_config(tmp_path, "")
    result = run_cli(["--count", "1"], env={"BDF_CONFIG": str(config), "BDF__PRODUCER__MAX_RETRIES": "-1"})
    assert result.exit_code == 2
    assert "producer.max_retries" in result.output


def test_missing_credentials_file_exits_2_naming_it(tmp_path):
    config = write_config(tmp_path, "")
    result = run_cli(["--config", str(config)])
    assert result.exit_code == 2
    assert str(tmp_path / "kafka.toml") in result.output


def test_missing_kafka_section_exits_2_naming_it(tmp_path):
    config = tmp_path / "bigdataflow.toml"
    config.write_text("[producer]\nbatch_size = 10\n", encoding="utf-8")
    result = run_cli(["--config", str(config)])
    assert result.exit_code == 2
    assert "kafka" in result.output


def test_missing_ca_file_exits_2_naming_the_key(tmp_path):
    credentials = tmp_path / "kafka.toml"
    fake = fake_credentials()
    credentials.write_text(f'username = "{fake.username}"\npassword = "{fake.password}"\n', encoding="utf-8")
    credentials.chmod(0o600)
    config = write_config(tmp_path, "")
    env = {
        "BDF__KAFKA__CA_FILE": str(tmp_path / "missing-ca.pem"),
        "BDF__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    }
    result = run_cli(["--config", str(config)], env=env)
    assert result.exit_code == 2
    assert "kafka.ca_file" in result.output


def test_cli_help_lists_its_options():
    result = run_cli(["--help"])
    assert result.exit_code == 0
    for option in ("--config", "--count", "--progress-interval", "-v"):
        assert option in result.output
