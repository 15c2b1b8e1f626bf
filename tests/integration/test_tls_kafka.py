"""Kafka over TLS with bdf.clients: a real SASL_SSL broker on 127.0.0.1, a throwaway CA.

The broker (tests/kafka_broker.py) presents a certificate for ``localhost`` signed by a CA
made here (``cryptography``); its key store is PEM. Factory-built confluent clients and the
Kafka tools' properties file work with that CA; another CA, or a host name the
certificate does not name, fails the handshake.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from acl.kafka import KafkaToolError, KafkaTools  # noqa: E402
from acl.model import Acl  # noqa: E402
from tests.kafka_broker import ADMIN_PASSWORD, NEEDS_BROKER, Broker, BrokerTls, password, running_broker  # noqa: E402
from tests.tls import certificate_authority, server_certificate, write_pem  # noqa: E402

TOPIC = "tls_probe"
pytestmark = NEEDS_BROKER


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    work = tmp_path_factory.mktemp("kafka-tls")
    ca = certificate_authority("bdf test CA")
    ca_file, _ = write_pem(work, "ca", ca)
    server = server_certificate(ca, ["localhost"])  # not 127.0.0.1: the host name check is tested
    key_store = work / "broker-keystore.pem"
    key_store.write_bytes(server.key_pem + server.certificate_pem)
    key_store.chmod(0o600)
    with running_broker(
        work,
        [TOPIC],
        {"tls-probe": password("tls-probe")},
        tls=BrokerTls(key_store, ca_file),
        advertised="localhost",
    ) as started:
        yield started


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = write_pem(tmp_path_factory.mktemp("other-ca"), "other-ca", certificate_authority("another CA"))
    return path


def test_factory_built_producer_and_consumer_round_trip_over_sasl_ssl(broker):
    config = broker.admin_client_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["ssl.ca.location"] == str(broker.connection.ca_file)
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    value = uuid.uuid4().hex.encode()
    producer = confluent_kafka.Producer(config | {"acks": "all", "enable.idempotence": True})
    producer.produce(TOPIC, value=value)
    assert producer.flush(60) == 0
    consumer = confluent_kafka.Consumer(
        config | {"group.id": f"tls-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([TOPIC])
    received = []
    deadline = time.monotonic() + 60
    try:
        while value not in received and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                received.append(message.value())
    finally:
        consumer.close()
    assert value in received


def test_kafka_tools_work_over_tls_with_the_factorys_properties_file(broker):
    text = broker.admin_config.read_text()
    assert (
        "ssl.truststore.type=PEM\n" in text
        and f"ssl.truststore.location={broker.connection.ca_file}\n" in text
    )
    tools = KafkaTools(broker.bin, broker.bootstrap, broker.admin_config)
    acl = Acl("User:tls-probe", "TOPIC", TOPIC, "LITERAL", "READ", "ALLOW")
    tools.add_acls([acl])
    assert acl in tools.list_acls()


def handshake_errors(config: dict[str, object], timeout: float = 30) -> list[object]:
    """The errors librdkafka reports while it tries to reach the broker with ``config``."""
    errors: list[object] = []
    producer = confluent_kafka.Producer(config | {"error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        producer.poll(0.5)
    return errors


def assert_handshake_refused(error) -> None:
    # librdkafka reports a failed verification as _SSL or, on the bootstrap connection, _TRANSPORT.
    assert error.code() in (confluent_kafka.KafkaError._SSL, confluent_kafka.KafkaError._TRANSPORT)
    assert "certificate verify failed" in error.str()


def test_a_client_trusting_another_ca_fails_the_handshake(broker, other_ca):
    wrong = broker.connection.model_copy(update={"ca_file": other_ca})
    errors = handshake_errors(broker.client_config("admin", ADMIN_PASSWORD, wrong))
    assert errors, "no error: the client connected with a CA that did not sign the broker's certificate"
    assert_handshake_refused(errors[0])


def test_a_client_at_an_address_the_certificate_does_not_name_fails_the_handshake(broker):
    port = broker.bootstrap.rpartition(":")[2]
    elsewhere = broker.connection.model_copy(update={"bootstrap_servers": [f"127.0.0.1:{port}"]})
    errors = handshake_errors(broker.client_config("admin", ADMIN_PASSWORD, elsewhere))
    assert errors, "no error: the client accepted a certificate that does not name 127.0.0.1"
    assert_handshake_refused(errors[0])


def test_the_kafka_tools_trusting_another_ca_fail_the_handshake(broker, other_ca, tmp_path):
    wrong = broker.write_admin_properties(
        tmp_path / "wrong-ca.properties", broker.connection.model_copy(update={"ca_file": other_ca})
    )
    with pytest.raises(
        KafkaToolError, match=r"SunCertPathBuilderException: unable to find valid certification path"
    ):
        KafkaTools(broker.bin, broker.bootstrap, wrong, timeout=120).list_acls()
