"""bdf-acl against a real Kafka 4.4 broker: what clients can and cannot do afterwards.

Starts a single SASL/SCRAM KRaft node on 127.0.0.1 (tests/kafka_broker.py: needs Java
17+ and the Kafka distribution from `make artifacts`); stops it at the end.
Takes about three minutes: every kafka-acls.sh call starts a JVM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from tests.kafka_broker import NEEDS_BROKER, REPO, Broker, password, running_broker  # noqa: E402

TOPICS = ("user_profiles", "user_profiles_dlq", "analytics.events")
USERS = ("producer", "stream", "alice", "dana")
# A second super user whose password needs escaping, given through the environment.
OPS_PASSWORD = 'p"q\\r é-' + uuid.uuid4().hex[:8]

pytestmark = NEEDS_BROKER


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    users = {**{user: password(user) for user in USERS}, "ops": OPS_PASSWORD}
    work = tmp_path_factory.mktemp("kafka")
    with running_broker(work, TOPICS, users, extra_super_users=["User:ops"]) as started:
        producer = confluent_kafka.Producer(started.admin_client_config())
        for topic in TOPICS:  # something for every consumer below to read
            producer.produce(topic, b'{"hello": "world"}')
        assert producer.flush(30) == 0
        yield started


def acl_audit_log(broker: Broker) -> Path:
    return broker.work / "audit" / "acl-audit.jsonl"


# --- bdf-acl and the clients ----------------------------------------------------------------


def bdf_acl(broker: Broker, file: Path, *args: str, env: dict[str, str] | None = None, config: bool = True):
    options = ["--file", str(file), "--bootstrap-server", broker.bootstrap, "--kafka-bin", str(broker.bin)]
    options += ["--audit-log", str(acl_audit_log(broker))]
    if config:
        options += ["--command-config", str(broker.admin_config)]
    return subprocess.run(  # noqa: S603 - this interpreter, the CLI under test
        [sys.executable, "-m", "acl.cli", *options, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=600,
        check=False,
    )


def consume(broker: Broker, user: str, topic: str, group: str, timeout: float = 30) -> str:
    """'ok' when a message arrives, else the Kafka error name (e.g. TOPIC_AUTHORIZATION_FAILED)."""
    consumer = confluent_kafka.Consumer(
        {**broker.client_config(user), "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is None:
                continue
            return message.error().name() if message.error() else "ok"
        return "timeout"
    finally:
        consumer.close()


def produce(broker: Broker, user: str, topic: str, idempotent: bool = False) -> str:
    """'ok' when the message is acknowledged, else the delivery error name."""
    outcome: list[str] = []
    producer = confluent_kafka.Producer(
        {**broker.client_config(user), "enable.idempotence": idempotent, "message.timeout.ms": 15000}
    )
    producer.produce(
        topic, b"{}", on_delivery=lambda error, _message: outcome.append(error.name() if error else "ok")
    )
    producer.flush(30)
    return outcome[0] if outcome else "timeout"


def authenticates(broker: Broker, user: str, password: str | None = None) -> bool:
    errors: list[str] = []
    client = confluent_kafka.Producer(
        {**broker.client_config(user, password), "error_cb": lambda error: errors.append(error.name())}
    )
    try:
        client.list_topics(timeout=10)
        return True
    except confluent_kafka.KafkaException:
        deadline = time.monotonic() + 10
        while "_AUTHENTICATION" not in errors and time.monotonic() < deadline:
            client.poll(0.5)
        assert "_AUTHENTICATION" in errors, f"failed, but not on authentication: {errors}"
        return False


def live_acls(broker: Broker, file: Path, principal: str) -> list[dict]:
    result = bdf_acl(broker, file, "--output", "json", "list", "--principal", principal)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["principals"]
    return entry["acls"]


@pytest.fixture(scope="module")
def deployed(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The repository's acl/access.yml applied to the fresh cluster: (its copy, apply's JSON)."""
    file = tmp_path_factory.mktemp("acl") / "access.yml"
    shutil.copy(REPO / "acl" / "access.yml", file)
    result = bdf_acl(broker, file, "--output", "json", "apply", "--yes")
    assert result.returncode == 0, result.stderr
    return file, json.loads(result.stdout)


# --- the checks --------------------------------------------------------------------------------


def test_first_apply_reports_changes_and_the_plan_after_it_is_empty(broker, deployed):
    file, report = deployed
    assert report["changed"] is True
    assert report["removed"] == []
    assert {acl["principal"] for acl in report["added"]} == {
        "User:producer",
        "User:stream",
        "User:alice",
        "User:dana",
    }
    plan = bdf_acl(broker, file, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout
    again = bdf_acl(broker, file, "--output", "json", "apply", "--yes")
    assert json.loads(again.stdout)["changed"] is False


def test_pipeline_principals_can_do_their_job_and_nothing_more(broker, deployed):
    assert produce(broker, "producer", "user_profiles", idempotent=True) == "ok"
    assert produce(broker, "producer", "user_profiles_dlq") == "TOPIC_AUTHORIZATION_FAILED"
    assert (
        consume(broker, "producer", "user_profiles", "user-profiles-stream-x") == "GROUP_AUTHORIZATION_FAILED"
    )
    # Spark's source names its group <groupIdPrefix>-<uuid>: the prefixed ACL matches.
    assert consume(broker, "stream", "user_profiles", f"user-profiles-stream-{uuid.uuid4()}") == "ok"
    assert consume(broker, "stream", "user_profiles", "some-other-group") == "GROUP_AUTHORIZATION_FAILED"
    assert produce(broker, "stream", "user_profiles_dlq") == "ok"
    assert produce(broker, "stream", "user_profiles") == "TOPIC_AUTHORIZATION_FAILED"
    # Analysts never read the raw profiles (DENY), even with a group they may use.
    assert consume(broker, "alice", "user_profiles", "analytics.raw") == "TOPIC_AUTHORIZATION_FAILED"


def test_broken_description_changes_nothing_and_names_the_error(broker, deployed, tmp_path):
    file, _ = deployed
    before = live_acls(broker, file, "User:alice")
    broken = tmp_path / "access.yml"
    text = file.read_text().replace("operations: [Write, Describe]}", "operations: [Write, Descibe]}", 1)
    broken.write_text(text.replace("      - User:alice\n", "      - User:alice\n      - User:alice\n", 1))
    result = bdf_acl(broker, broken, "--output", "json", "apply", "--yes")
    assert result.returncode == 1
    assert "unknown operation 'Descibe' (did you mean 'Describe'?)" in result.stderr
    assert "duplicate principal User:alice" in result.stderr
    problems = json.loads(result.stdout)["problems"]
    assert all(problem["file"] == str(broken) and problem["line"] > 0 for problem in problems)
    assert live_acls(broker, file, "User:alice") == before


def test_moved_member_loses_the_old_team_rights_and_gains_the_new_ones(broker, deployed):
    file, _ = deployed
    assert consume(broker, "alice", "analytics.events", "analytics.before") == "ok"
    assert consume(broker, "alice", "user_profiles_dlq", "dlq-inspect.before") == "GROUP_AUTHORIZATION_FAILED"

    moved = bdf_acl(
        broker, file, "move-member", "User:alice", "--from", "analytics", "--to", "data-engineering"
    )
    assert moved.returncode == 0, moved.stderr
    assert "User:alice (team data-engineering)" in moved.stdout
    applied = bdf_acl(broker, file, "--output", "json", "apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["changed"] is True

    assert consume(broker, "alice", "analytics.events", "analytics.after") == "GROUP_AUTHORIZATION_FAILED"
    assert consume(broker, "alice", "analytics.events", "dlq-inspect.after") == "TOPIC_AUTHORIZATION_FAILED"
    assert consume(broker, "alice", "user_profiles_dlq", "dlq-inspect.after") == "ok"
    assert bdf_acl(broker, file, "plan", "--detailed-exitcode").returncode == 0


def test_offboarded_principal_can_no_longer_authenticate(broker, deployed):
    file, _ = deployed
    assert authenticates(broker, "dana")
    offboarded = bdf_acl(broker, file, "offboard", "User:dana")
    assert offboarded.returncode == 0, offboarded.stderr
    assert "SCRAM credential SCRAM-SHA-512 (can no longer authenticate)" in offboarded.stdout
    applied = bdf_acl(broker, file, "--output", "json", "apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert report["credentials_deleted"] == [{"principal": "User:dana", "mechanism": "SCRAM-SHA-512"}]
    assert {acl["principal"] for acl in report["removed"]} == {"User:dana"}

    assert not authenticates(broker, "dana")
    assert live_acls(broker, file, "User:dana") == []
    assert bdf_acl(broker, file, "plan", "--detailed-exitcode").returncode == 0
    audit = [json.loads(line) for line in acl_audit_log(broker).read_text().splitlines()]
    assert any(entry["action"] == "delete_scram_credential" for entry in audit)


def test_admin_credentials_from_the_environment(broker, deployed):
    file, _ = deployed
    env = {"BDF_ACL_SASL_USERNAME": "ops", "BDF_ACL_SASL_PASSWORD": OPS_PASSWORD}
    result = bdf_acl(broker, file, "plan", "--detailed-exitcode", env=env, config=False)
    assert result.returncode == 0, result.stderr
    wrong = bdf_acl(broker, file, "plan", env={**env, "BDF_ACL_SASL_PASSWORD": "wrong"}, config=False)
    assert wrong.returncode == 1
    assert "SaslAuthenticationException" in wrong.stderr
