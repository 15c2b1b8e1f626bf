"""A real Kafka 4.4 broker on 127.0.0.1 for the tests that need one (ACLs, bdf-dlq).

A single KRaft node (broker + controller) in a temporary directory, with SASL/SCRAM-SHA-512
and the StandardAuthorizer (allow.everyone.if.no.acl.found=false), like the deployed
cluster; stopped at the end. Needs Java 17+ and the Kafka distribution:
.artifacts/kafka_2.13-4.4.0.tgz (`make artifacts`) or BDF_KAFKA_DIST pointing at a .tgz
or an unpacked distribution.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bdf import clients
from bdf.config import Credentials, KafkaConnection
from dashboard import demo

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIST = REPO / ".artifacts" / "kafka_2.13-4.4.0.tgz"
DIST = Path(os.environ.get("BDF_KAFKA_DIST", DEFAULT_DIST))
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex

# pytestmark of a test module that starts a broker.
NEEDS_BROKER = [
    pytest.mark.integration,
    pytest.mark.skipif(not DIST.exists(), reason=f"no Kafka distribution at {DIST} (make artifacts)"),
    pytest.mark.skipif(shutil.which("java") is None, reason="Kafka needs Java (java not on PATH)"),
]


def password(user: str) -> str:
    """The generated password of a test user."""
    return f"{user}-pw-{ADMIN_PASSWORD[-8:]}"


@dataclass(frozen=True)
class BrokerTls:
    """The broker's PEM key store (private key, then certificate) and the CA clients trust."""

    key_store: Path
    ca_file: Path


@dataclass
class Broker:
    home: Path
    work: Path
    connection: KafkaConnection  # how clients reach and trust it (bdf.clients builds them)
    admin_config: Path  # admin-client.properties for the Kafka tools

    @property
    def bin(self) -> Path:
        return self.home / "bin"

    @property
    def bootstrap(self) -> str:
        return self.connection.bootstrap_servers[0]

    def client_config(
        self, user: str, secret: str | None = None, connection: KafkaConnection | None = None
    ) -> dict[str, object]:
        login = Credentials(username=user, password=secret if secret is not None else password(user))
        # log_level 0: the expected failures would flood the test output.
        return clients.kafka_config(connection or self.connection, login) | {"log_level": 0}

    def admin_client_config(self) -> dict[str, object]:
        return self.client_config("admin", ADMIN_PASSWORD)

    def write_admin_properties(self, path: Path, connection: KafkaConnection | None = None) -> Path:
        """An admin properties file for the Kafka tools, mode 0600."""
        login = Credentials(username="admin", password=ADMIN_PASSWORD)
        path.write_text(clients.kafka_properties(connection or self.connection, login))
        path.chmod(0o600)
        return path


def _unpack(work: Path) -> Path:
    if DIST.is_dir():
        return DIST
    with tarfile.open(DIST) as archive:
        archive.extractall(work, filter="data")
    (home,) = [path for path in work.iterdir() if (path / "bin" / "kafka-acls.sh").exists()]
    return home


def _server_properties(
    work: Path,
    broker_port: int,
    controller_port: int,
    super_users: str,
    advertised: str,
    tls: BrokerTls | None,
) -> str:
    login = "org.apache.kafka.common.security"
    protocol = "SASL_SSL" if tls else "SASL_PLAINTEXT"
    # PEM key store and trust store (Kafka 2.7+); the broker talks to itself over BROKER too.
    ssl = (
        f"listener.name.broker.ssl.keystore.type=PEM\nlistener.name.broker.ssl.keystore.location={tls.key_store}\n"
        f"listener.name.broker.ssl.truststore.type=PEM\nlistener.name.broker.ssl.truststore.location={tls.ca_file}\n"
        if tls
        else ""
    )
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
listeners=BROKER://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=BROKER://{advertised}:{broker_port}
inter.broker.listener.name=BROKER
listener.security.protocol.map=BROKER:{protocol},CONTROLLER:SASL_PLAINTEXT
{ssl}sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.broker.scram-sha-512.sasl.jaas.config={login}.scram.ScramLoginModule required \
username="admin" password="{ADMIN_PASSWORD}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={login}.plain.PlainLoginModule required \
username="controller" password="{ADMIN_PASSWORD}" user_controller="{ADMIN_PASSWORD}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users={super_users}
log.dirs={work / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
"""


def _wait_until_ready(process: subprocess.Popen, admin, log: Path, timeout: float = 120) -> None:
    import confluent_kafka

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


def _create_objects(admin, topics: Sequence[str], users: Mapping[str, str]) -> None:
    from confluent_kafka.admin import (
        NewTopic,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    for future in admin.create_topics([NewTopic(topic, 1, 1) for topic in topics]).values():
        future.result()
    credentials = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), secret.encode()
        )
        for user, secret in users.items()
    ]
    for future in admin.alter_user_scram_credentials(credentials).values():
        future.result()


def _format_storage(home: Path, properties: Path, env: dict[str, str]) -> None:
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


@contextmanager
def running_broker(
    work: Path,
    topics: Sequence[str],
    users: Mapping[str, str],
    extra_super_users: Sequence[str] = (),
    tls: BrokerTls | None = None,
    advertised: str = "127.0.0.1",
) -> Iterator[Broker]:
    """A started broker with ``topics`` (one partition each) and SCRAM ``users`` (name -> password).

    With ``tls`` its client listener is SASL_SSL (clients verify it against ``tls.ca_file``
    and the ``advertised`` host name); the controller listener stays on loopback.
    """
    from confluent_kafka.admin import AdminClient

    home = _unpack(work)
    broker_port, controller_port = demo.free_port(), demo.free_port()
    properties = work / "server.properties"
    super_users = ";".join(["User:admin", "User:controller", *extra_super_users])
    properties.write_text(
        _server_properties(work, broker_port, controller_port, super_users, advertised, tls)
    )
    env = {**os.environ, "KAFKA_HEAP_OPTS": "-Xmx512m -Xms256m", "LOG_DIR": str(work / "logs")}
    _format_storage(home, properties, env)
    log = work / "broker.out"
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(home / "bin" / "kafka-server-start.sh"), str(properties)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        connection = KafkaConnection(
            bootstrap_servers=[f"{advertised}:{broker_port}"],
            security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
            ca_file=tls.ca_file if tls else None,
        )
        broker = Broker(home, work, connection, work / "admin-client.properties")
        admin = AdminClient(broker.admin_client_config())
        _wait_until_ready(process, admin, log)
        _create_objects(admin, topics, users)
        broker.write_admin_properties(broker.admin_config)
        yield broker
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
