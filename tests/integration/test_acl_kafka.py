"""bdf-acl against a real Kafka 4.4 broker: what clients can and cannot do afterwards.

Starts a single KRaft node (broker + controller) on 127.0.0.1 only, in a temporary
directory, with SASL/SCRAM-SHA-512 and the StandardAuthorizer
(allow.everyone.if.no.acl.found=false), like the deployed cluster; stops it at the end.
Needs Java 17+ and the Kafka distribution: .artifacts/kafka_2.13-4.4.0.tgz (`make
artifacts`) or BDF_KAFKA_DIST pointing at a .tgz or an unpacked distribution.
Takes about three minutes: every kafka-acls.sh call starts a JVM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import (  # noqa: E402 - after the importorskip
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIST = REPO / ".artifacts" / "kafka_2.13-4.4.0.tgz"
DIST = Path(os.environ.get("BDF_KAFKA_DIST", DEFAULT_DIST))
TOPICS = ("user_profiles", "user_profiles_dlq", "analytics.events")
USERS = ("producer", "stream", "alice", "dana")
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex
# A second super user whose password needs escaping, given through the environment.
OPS_PASSWORD = 'p"q\\r é-' + uuid.uuid4().hex[:8]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not DIST.exists(), reason=f"no Kafka distribution at {DIST} (make artifacts)"),
    pytest.mark.skipif(shutil.which("java") is None, reason="Kafka needs Java (java not on PATH)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _password(user: str) -> str:
    return f"{user}-pw-{ADMIN_PASSWORD[-8:]}"


@dataclass
class Broker:
    home: Path
    bootstrap: str
    admin_config: Path
    audit_log: Path

    @property
    def bin(self) -> Path:
        return self.home / "bin"

    def client_config(self, user: str, password: str | None = None) -> dict[str, object]:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password if password is not None else _password(user),
            "log_level": 0,  # the expected failures would flood the test output
        }


def _unpack(work: Path) -> Path:
    if DIST.is_dir():
        return DIST
    with tarfile.open(DIST) as archive:
        archive.extractall(work, filter="data")
    (home,) = [path for path in work.iterdir() if (path / "bin" / "kafka-acls.sh").exists()]
    return home


def _server_properties(work: Path, broker_port: int, controller_port: int) -> str:
    login = "org.apache.kafka.common.security"
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
listeners=BROKER://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=BROKER://127.0.0.1:{broker_port}
inter.broker.listener.name=BROKER
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.broker.scram-sha-512.sasl.jaas.config={login}.scram.ScramLoginModule required \
username="admin" password="{ADMIN_PASSWORD}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={login}.plain.PlainLoginModule required \
username="controller" password="{ADMIN_PASSWORD}" user_controller="{ADMIN_PASSWORD}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller;User:ops
log.dirs={work / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
"""


def _wait_until_ready(process: subprocess.Popen, admin: AdminClient, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the broker exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            admin.list_topics(timeout=5)
            return
        except confluent_kafka.KafkaException:
            time.sleep(1)
    pytest.fail(f"the broker did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def _create_objects(admin: AdminClient, admin_settings: dict[str, object]) -> None:
    for future in admin.create_topics([NewTopic(topic, 1, 1) for topic in TOPICS]).values():
        future.result()
    credentials = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
        )
        for user, password in [*((user, _password(user)) for user in USERS), ("ops", OPS_PASSWORD)]
    ]
    for future in admin.alter_user_scram_credentials(credentials).values():
        future.result()
    producer = confluent_kafka.Producer(admin_settings)
    for topic in TOPICS:
        producer.produce(topic, b'{"hello": "world"}')
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    work = tmp_path_factory.mktemp("kafka")
    home = _unpack(work)
    broker_port, controller_port = _free_port(), _free_port()
    properties = work / "server.properties"
    properties.write_text(_server_properties(work, broker_port, controller_port))
    env = {**os.environ, "KAFKA_HEAP_OPTS": "-Xmx512m -Xms256m", "LOG_DIR": str(work / "logs")}
    storage = subprocess.run(  # noqa: S603 - fixed argv
        [
            str(home / "bin" / "kafka-storage.sh"),
            "format",
            "--cluster-id",
            uuid.uuid4().hex[:22],
            "--config",
            str(properties),
            "--add-scram",
            f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]",
        ],
        capture_output=True,
        text=True,
        env={**env, "KAFKA_HEAP_OPTS": "-Xmx256m"},
        timeout=120,
        check=False,
    )
    assert storage.returncode == 0, storage.stderr
    log = work / "broker.out"
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(home / "bin" / "kafka-server-start.sh"), str(properties)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    bootstrap = f"127.0.0.1:{broker_port}"
    admin_settings = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "admin",
        "sasl.password": ADMIN_PASSWORD,
        "log_level": 0,
    }
    try:
        admin = AdminClient(admin_settings)
        _wait_until_ready(process, admin, log)
        _create_objects(admin, admin_settings)
        admin_config = work / "admin-client.properties"
        admin_config.write_text(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="admin" password="{ADMIN_PASSWORD}";\n'
        )
        admin_config.chmod(0o600)
        yield Broker(home, bootstrap, admin_config, work / "audit" / "acl-audit.jsonl")
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the broker's own session, started above
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


# --- bdf-acl and the clients ----------------------------------------------------------------


def bdf_acl(broker: Broker, file: Path, *args: str, env: dict[str, str] | None = None, config: bool = True):
    options = ["--file", str(file), "--bootstrap-server", broker.bootstrap, "--kafka-bin", str(broker.bin)]
    options += ["--audit-log", str(broker.audit_log)]
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
    audit = [json.loads(line) for line in broker.audit_log.read_text().splitlines()]
    assert any(entry["action"] == "delete_scram_credential" for entry in audit)


def test_admin_credentials_from_the_environment(broker, deployed):
    file, _ = deployed
    env = {"BDF_ACL_SASL_USERNAME": "ops", "BDF_ACL_SASL_PASSWORD": OPS_PASSWORD}
    result = bdf_acl(broker, file, "plan", "--detailed-exitcode", env=env, config=False)
    assert result.returncode == 0, result.stderr
    wrong = bdf_acl(broker, file, "plan", env={**env, "BDF_ACL_SASL_PASSWORD": "wrong"}, config=False)
    assert wrong.returncode == 1
    assert "SaslAuthenticationException" in wrong.stderr
