"""The deployed pipeline on the local lab, end to end, against the real servers.

Runs with LAB=1 after `make deploy INVENTORY=inventory/lab` (`make e2e` does both; another
lab with LAB_INVENTORY).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid

import pytest

from bdf.keyring import load_keyring
from tests.lab import (
    CASSANDRA_HOSTS,
    DLQ,
    HOSTS,
    INVENTORY_ARG,
    KAFKA_HOSTS,
    LAB_ONLY,
    MONGODB_HOST,
    PRODUCER_HOST,
    REPO,
    SECRETS,
    SPARK_MASTER_HOST,
    SPARK_WORKER_HOSTS,
    STREAM_HOST,
    TOPIC,
    erased_rows,
    eventually,
    job_state,
    kafka_conf,
    message_keys,
    restarts,
    sealed,
    service_active,
    ssh,
)

pytestmark = LAB_ONLY


@pytest.mark.parametrize(
    ("host", "unit"),
    [
        *((host, "kafka") for host in KAFKA_HOSTS),
        (PRODUCER_HOST, "bdf-randomuser"),
        (PRODUCER_HOST, "bdf-producer"),
        (SPARK_MASTER_HOST, "spark-master"),
        *((host, "spark-worker") for host in SPARK_WORKER_HOSTS),
        (STREAM_HOST, "user-profiles-stream"),
        *((host, "cassandra") for host in CASSANDRA_HOSTS),
        (MONGODB_HOST, "ferretdb"),
    ],
)
def test_service_is_active_under_systemd(host, unit):
    assert service_active(host, unit), f"{unit} on {host} is not active"


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


def test_spark_master_refuses_an_application_without_the_deployment_secret():
    """spark.authenticate: a driver without /etc/spark's secret cannot register (takes about a minute)."""
    master, name = f"spark://{HOSTS[SPARK_MASTER_HOST]}:7077", f"probe-{uuid.uuid4().hex[:8]}"
    driver = (
        "from pyspark.sql import SparkSession\n"
        f"SparkSession.builder.master('{master}').appName('{name}').getOrCreate()\n"
    )
    python = "/opt/bigdataflow/venv/bin/python"
    command = f'cd /tmp && SPARK_CONF_DIR=/nonexistent timeout 150 {python} -c "{driver}" 2>&1'
    result = ssh(STREAM_HOST, command)
    assert "All masters are unresponsive" in result.stdout, result.stdout[-2000:]
    state = _spark_master_state()
    names = [app["name"] for app in state["activeapps"] + state["completedapps"]]
    assert name not in names and "user-profiles-stream" in names


# Each Spark UI: the host it runs on, its port.
SPARK_UIS = {
    "master": (SPARK_MASTER_HOST, 8080),
    "worker": (SPARK_WORKER_HOSTS[0], 8081),
    "stream job": (STREAM_HOST, 4040),
}


def _spark_ui(ui: str, path: str, method: str = "GET") -> tuple[str, str]:
    """(HTTP status, body) of a page of the Spark UI ``ui``, asked on its own host."""
    host, port = SPARK_UIS[ui]
    url = f"http://{HOSTS[host]}:{port}{path}"
    result = ssh(host, f"curl -sS -X {method} -w '\\n%{{http_code}}' '{url}'")
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return status, body


def _spark_master_state() -> dict:
    status, body = _spark_ui("master", "/json/")
    assert status == "200", status
    return json.loads(body)


def test_the_stream_job_survives_a_spark_master_restart():
    """The master recovers its applications from disk (spark.deploy.recoveryMode): the job
    keeps its application and executors instead of waiting for ever without them."""
    app = next(a for a in _spark_master_state()["activeapps"] if a["name"] == "user-profiles-stream")
    restarts_before = restarts(STREAM_HOST, "user-profiles-stream")
    assert ssh(SPARK_MASTER_HOST, "systemctl restart spark-master").returncode == 0

    def recovered() -> bool | None:
        try:
            state = _spark_master_state()
        except (AssertionError, json.JSONDecodeError):
            return None  # the UI is not up yet
        running = {a["id"]: a["state"] for a in state["activeapps"]}
        return (state["status"] == "ALIVE" and running.get(app["id"]) == "RUNNING") or None

    eventually(recovered, 180, "the stream job's application recovered by the restarted master")
    assert restarts(STREAM_HOST, "user-profiles-stream") == restarts_before


@pytest.mark.parametrize("ui", SPARK_UIS)
def test_spark_web_ui_answers_only_its_own_host(ui):
    """No login on Spark's UIs: nftables refuses them from any other host (an SSH tunnel is the way in)."""
    host, port = SPARK_UIS[ui]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOSTS[host], port), timeout=5).close()
    status, _ = _spark_ui(ui, "/")
    assert status in {"200", "302"}, f"the {ui} UI does not answer on {host} itself: {status}"


def test_spark_web_uis_cannot_kill_the_stream_job():
    """spark.ui.killEnabled=false: no kill link, and the master's kill endpoint does nothing."""
    app = next(a for a in _spark_master_state()["activeapps"] if a["name"] == "user-profiles-stream")
    restarts_before = restarts(STREAM_HOST, "user-profiles-stream")
    _, page = _spark_ui("master", "/")
    assert app["id"] in page and "/app/kill/" not in page
    _, stages = _spark_ui("stream job", "/stages/")
    assert "/stages/stage/kill/" not in stages
    _spark_ui("master", f"/app/kill/?id={app['id']}&terminate=true", method="POST")
    time.sleep(5)
    active = [a["id"] for a in _spark_master_state()["activeapps"]]
    assert app["id"] in active
    assert restarts(STREAM_HOST, "user-profiles-stream") == restarts_before


def test_profiles_are_stored_encrypted_and_decrypt_with_the_deployment_key(cassandra):
    eventually(lambda: _stored(cassandra) > 0, 300, "rows in Cassandra")
    keys = load_keyring(SECRETS / "profile-keys.json")
    rows = list(cassandra.execute("SELECT * FROM profiles LIMIT 50"))
    assert rows
    for row in rows:
        email = keys.decrypt(row["email_enc"], "email_enc")
        assert re.fullmatch(r"[^@\s]+@[^@\s]+", email)
        assert row["email_pseudonym"] == keys.pseudonym(email)
        assert row["email_domain"] == email.split("@")[1].lower()
        assert keys.decrypt(row["full_name_enc"], "full_name_enc")
        assert row["birth_year"] == row["birth_date"].date().year
        assert row["key_id"] in keys.encryption_keys  # rows stored before a rotation keep their key id


def test_malformed_message_lands_in_the_dead_letter_topic_with_its_reason():
    from confluent_kafka import Consumer, Producer

    marker = f"bad-{uuid.uuid4()}".encode()
    producer = Producer(kafka_conf("producer"))
    producer.produce(TOPIC, key=marker, value=sealed(b"this is not json"))
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
        assert b"not json" not in letter.value(), "a dead letter is encrypted like the raw topic"
        assert message_keys().open(letter.value(), TOPIC) == b"this is not json"
        assert headers["dlq.reason"].startswith("message: not valid JSON (line 1, column ")
        assert headers["dlq.source.topic"] == TOPIC
    finally:
        consumer.close()


def _totals(mongo) -> int:
    document = mongo["totals"].find_one({"_id": "all"})
    return document["users"] if document else 0


def _stored(cassandra) -> int:
    return cassandra.execute("SELECT count(*) FROM profiles").one()["count"]


def test_aggregates_equal_stored_profiles_and_survive_a_job_restart(cassandra, mongo):
    # The aggregates keep counting people erased since (counts are not personal data).
    erased = erased_rows()
    assert ssh(PRODUCER_HOST, "systemctl stop bdf-producer").returncode == 0
    try:
        # Quiescent: nothing new arrives; the job drains the topic.
        seen = []

        def settled():
            first = (_stored(cassandra), _totals(mongo))
            time.sleep(12)
            second = (_stored(cassandra), _totals(mongo))
            seen[:] = [first, second]
            return second if first == second and second[0] + erased == second[1] and second[0] > 0 else None

        stored, total = eventually(
            settled,
            300,
            f"stored rows + {erased} erased == totals",
            explain=lambda: f"(stored, totals) 12 s apart: {seen}; {job_state()}",
        )
        by_nationality = sum(doc["users"] for doc in mongo["users_by_nationality"].find())
        assert by_nationality == total

        assert ssh(STREAM_HOST, "systemctl restart user-profiles-stream").returncode == 0
        eventually(
            lambda: service_active(STREAM_HOST, "user-profiles-stream"), 60, "the job to be active again"
        )
        time.sleep(45)  # a restarted job replays from its checkpoint: counts must not move
        assert (_stored(cassandra), _totals(mongo)) == (stored, total)
    finally:
        ssh(PRODUCER_HOST, "systemctl start bdf-producer")


def test_mongodb_holds_no_per_person_data(mongo):
    for name in mongo.list_collection_names():
        for document in mongo[name].find():
            text = json.dumps(document, default=str)
            assert "@" not in text, f"{name} holds something that looks like an email"
            assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", text), f"{name} holds a user id"


def test_make_status_shows_every_units_state_and_restart_count_and_the_firing_alerts():
    """`active` alone hides a crash loop: the status names each unit's restarts, and the
    count of alerts firing in Prometheus."""
    result = subprocess.run(  # noqa: S603 - fixed command
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", INVENTORY_ARG, "playbooks/status.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert re.search(r'"user-profiles-stream": "NRestarts=\d+ ActiveState=active"', result.stdout), (
        result.stdout
    )
    assert re.search(r'"firing": \d+', result.stdout), result.stdout
