"""The deployed pipeline on the local lab, end to end, against the real servers.

Runs with LAB=1 after `make lab-up deploy INVENTORY=inventory/lab` (what `.ci/run`
does). Credentials come from the deployment's generated secrets (.secrets/lab/);
every address is a lab machine on the project's own bridge.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.keyring import load_keyring

REPO = Path(__file__).resolve().parents[2]
SECRETS = REPO / ".secrets" / "lab"
INVENTORY = yaml.safe_load((REPO / "inventory" / "lab" / "hosts.yml").read_text())
HOSTS = {name: v["ansible_host"] for name, v in INVENTORY["all"]["hosts"].items()}
KAFKA = f"{HOSTS['kafka1']}:9092"
TOPIC, DLQ = "user_profiles", "user_profiles_dlq"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("LAB") != "1", reason="needs the deployed lab: set LAB=1"),
]


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def ssh(host: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed command
        ["bash", str(REPO / "lab" / "lab.sh"), "ssh", host, command],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def eventually(check: Callable[[], Any], timeout: float, what: str, interval: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kafka_conf(user: str | None, password: str | None = None) -> dict[str, str]:
    conf = {"bootstrap.servers": KAFKA, "socket.timeout.ms": "10000"}
    if user:
        conf |= {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password if password is not None else secret(f"kafka-{user}"),
        }
    return conf


@pytest.fixture(scope="module")
def cassandra() -> Iterator[Any]:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = Cluster(
        [HOSTS["store1"]], auth_provider=PlainTextAuthProvider("bigdataflow", secret("cassandra-app"))
    )
    session = cluster.connect("user_profiles")
    yield session
    cluster.shutdown()


@pytest.fixture(scope="module")
def mongo() -> Iterator[Any]:
    from pymongo import MongoClient

    client = MongoClient(
        HOSTS["store1"],
        27017,
        username="stream",
        password=secret("mongodb-app"),
        authSource="user_profiles",
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=10_000,
    )
    yield client["user_profiles"]
    client.close()


@pytest.mark.parametrize(
    ("host", "unit"),
    [
        ("kafka1", "kafka"),
        ("kafka1", "bdf-randomuser"),
        ("kafka1", "bdf-producer"),
        ("spark1", "spark-master"),
        ("spark1", "spark-worker"),
        ("spark1", "user-profiles-stream"),
        ("store1", "cassandra"),
        ("store1", "ferretdb"),
    ],
)
def test_service_is_active_under_systemd(host, unit):
    result = ssh(host, f"systemctl is-active {unit}")
    assert result.stdout.strip() == "active", f"{unit} on {host}: {result.stdout}{result.stderr}"


def test_kafka_refuses_anonymous_clients_and_wrong_passwords():
    from confluent_kafka.admin import AdminClient

    for conf in (kafka_conf(None), kafka_conf("producer", "wrong-password")):
        with pytest.raises(Exception):  # noqa: B017 - either a transport or an authentication error
            AdminClient(conf).list_topics(timeout=10)


def test_producer_principal_may_write_but_not_read_profiles():
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(kafka_conf("producer") | {"group.id": "not-allowed", "auto.offset.reset": "earliest"})
    consumer.subscribe([TOPIC])
    try:
        message = eventually(lambda: consumer.poll(2), 30, "an authorization error")
        assert message.error() is not None
        assert message.error().code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
        )
    finally:
        consumer.close()


def test_profiles_are_stored_encrypted_and_decrypt_with_the_deployment_key(cassandra):
    eventually(
        lambda: cassandra.execute("SELECT count(*) FROM profiles").one()[0] > 0, 300, "rows in Cassandra"
    )
    keys = load_keyring(SECRETS / "profile-keys.json")
    rows = list(cassandra.execute("SELECT * FROM profiles LIMIT 50"))
    assert rows
    for row in rows:
        email = keys.decrypt(row.email_enc, "email_enc")
        assert re.fullmatch(r"[^@\s]+@[^@\s]+", email)
        assert row.email_pseudonym == keys.pseudonym(email)
        assert row.email_domain == email.split("@")[1].lower()
        assert keys.decrypt(row.full_name_enc, "full_name_enc")
        assert row.birth_year == row.birth_date.date().year
        assert row.key_id == keys.active_key_id


def test_malformed_message_lands_in_the_dead_letter_topic_with_its_reason():
    from confluent_kafka import Consumer, Producer

    marker = f"bad-{uuid.uuid4()}".encode()
    producer = Producer(kafka_conf("producer"))
    producer.produce(TOPIC, key=marker, value=b"this is not json")
    assert producer.flush(30) == 0

    consumer = Consumer(
        kafka_conf("admin") | {"group.id": f"dlq-check-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([DLQ])

    def our_letter():
        message = consumer.poll(2)
        if message is None or message.error() or message.key() != marker:
            return None
        return message

    try:
        letter = eventually(our_letter, 180, "the dead letter")
        headers = {k: v.decode() for k, v in letter.headers()}
        assert letter.value() == b"this is not json"
        assert headers["dlq.reason"] == "not a JSON object, or a field has the wrong type"
        assert headers["dlq.source.topic"] == TOPIC
    finally:
        consumer.close()


def _totals(mongo) -> int:
    document = mongo["totals"].find_one({"_id": "all"})
    return document["users"] if document else 0


def _stored(cassandra) -> int:
    return cassandra.execute("SELECT count(*) FROM profiles").one()[0]


def test_aggregates_equal_stored_profiles_and_survive_a_job_restart(cassandra, mongo):
    assert ssh("kafka1", "systemctl stop bdf-producer").returncode == 0
    try:
        # Quiescent: nothing new arrives; the job drains the topic.
        def settled():
            first = (_stored(cassandra), _totals(mongo))
            time.sleep(12)
            second = (_stored(cassandra), _totals(mongo))
            return second if first == second and second[0] == second[1] and second[0] > 0 else None

        stored, total = eventually(settled, 300, "Cassandra rows and MongoDB totals to agree")
        by_nationality = sum(doc["users"] for doc in mongo["users_by_nationality"].find())
        assert by_nationality == total

        assert ssh("spark1", "systemctl restart user-profiles-stream").returncode == 0
        eventually(
            lambda: ssh("spark1", "systemctl is-active user-profiles-stream").stdout.strip() == "active",
            60,
            "the job to be active again",
        )
        time.sleep(45)  # a restarted job replays from its checkpoint: counts must not move
        assert (_stored(cassandra), _totals(mongo)) == (stored, total)
    finally:
        ssh("kafka1", "systemctl start bdf-producer")


def test_mongodb_holds_no_per_person_data(mongo):
    for name in mongo.list_collection_names():
        for document in mongo[name].find():
            text = json.dumps(document, default=str)
            assert "@" not in text, f"{name} holds something that looks like an email"
            assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", text), f"{name} holds a user id"
