"""Faults on the deployed lab while a fixed set of profiles is published at a steady rate.

Each fault (the job or the broker killed with SIGKILL, the Spark master restarted,
Cassandra or FerretDB stopped for a minute, the store host's power cut for a minute) must
lose nothing and count nothing twice: every published profile is stored once and the
aggregates grow by an independent count of them. While FerretDB is down, profiles must
keep reaching Cassandra (the stores fail independently).

Run with ``make faults`` (LAB=1, after ``make demo`` or ``make e2e``); about 2 minutes a fault.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import subprocess
import threading
import time
import uuid

import pytest

from tests.factories import generated_profiles
from tests.lab import (
    LAB_ONLY,
    REPO,
    TOPIC,
    aggregates_match_cassandra,
    dead_letters,
    eventually,
    kafka_conf,
    sealed,
    settled,
    ssh,
    stored_ids,
    stored_of,
)

pytestmark = LAB_ONLY
PROFILES_PER_FAULT = 3_000
RATE_PER_SECOND = 50  # 60 s of traffic: the fault lies inside it
FAULT_STARTS_AFTER_SECONDS = 10
OUTAGE_SECONDS = 60
LAB_SH = str(REPO / "lab" / "lab.sh")
CONTROL_NODE = None  # a fault injected with lab/lab.sh on this machine, not over ssh

# fault: (host, inject, recover)
FAULTS = {
    "job-sigkill": ("spark1", "systemctl kill -s KILL user-profiles-stream", None),
    "broker-sigkill": ("kafka1", "systemctl kill -s KILL kafka", None),
    "spark-master-restart": ("spark1", "systemctl restart spark-master", None),
    "cassandra-stopped": ("store1", "systemctl stop cassandra", "systemctl start cassandra"),
    "ferretdb-stopped": ("store1", "systemctl stop ferretdb", "systemctl start ferretdb"),
    # Cassandra, FerretDB and PostgreSQL die at once with no shutdown; `up` boots the machine.
    "store-host-power-cut": (CONTROL_NODE, f"{LAB_SH} poweroff store1", f"{LAB_SH} up"),
}


def _run(host: str | None, command: str) -> subprocess.CompletedProcess[str]:
    if host is CONTROL_NODE:
        return subprocess.run(command.split(), capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    return ssh(host, command)


def _publish_steadily(profiles: list[dict], failures: list[str]) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka_conf("producer") | {"acks": "all", "enable.idempotence": True})

    def delivered(error, _message) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.monotonic()
    for index, profile in enumerate(profiles):
        producer.produce(
            TOPIC,
            key=profile["login"]["uuid"].encode(),
            value=sealed(json.dumps(profile)),
            on_delivery=delivered,
        )
        producer.poll(0)
        time.sleep(max(0.0, started + index / RATE_PER_SECOND - time.monotonic()))
    remaining = producer.flush(180)
    if remaining:
        failures.append(f"{remaining} messages never acknowledged")


def _stored_all(cassandra, ids: list[uuid.UUID]) -> bool | None:
    """True once Cassandra holds every id; None while it (or this test's session to it,
    which reconnects with backoff after a Cassandra restart) cannot answer yet."""
    from cassandra.cluster import NoHostAvailable

    try:
        return stored_of(cassandra, ids) == len(ids) or None
    except NoHostAvailable:
        return None


def _write_latencies(cassandra, ids: list[uuid.UUID]) -> list[float]:
    """Seconds from Kafka's timestamp to Cassandra's write time, per stored profile."""
    select = cassandra.prepare(
        "SELECT produced_at, writetime(nationality) AS written FROM profiles WHERE user_id IN ?"
    )
    latencies = []
    for start in range(0, len(ids), 50):
        for row in cassandra.execute(select, [ids[start : start + 50]]):
            produced = row["produced_at"].replace(tzinfo=dt.UTC).timestamp()
            latencies.append(row["written"] / 1e6 - produced)
    return latencies


def _what_is_missing(cassandra, profiles: list[dict]) -> str:
    """How many profiles Cassandra lacks, and which of those are dead letters (by reason)."""
    ids = [uuid.UUID(profile["login"]["uuid"]) for profile in profiles]
    missing = {str(user_id).encode() for user_id in set(ids) - stored_ids(cassandra, ids)}
    letters = dead_letters(missing, 60).values()
    reasons = collections.Counter(headers.get("dlq.reason", "?") for headers, _ in letters)
    return f"{len(missing)} of {len(ids)} not stored after 600 s; dead letters among them: {dict(reasons)}"


@pytest.mark.parametrize("fault", FAULTS, ids=FAULTS)
def test_nothing_is_lost_or_counted_twice(fault, cassandra, mongo, record_property):
    host, inject, recover = FAULTS[fault]
    profiles = generated_profiles(PROFILES_PER_FAULT, seed=f"fault-{fault}-{uuid.uuid4().hex[:6]}")
    assert ssh("kafka1", "systemctl stop bdf-producer").returncode == 0
    try:
        settled(cassandra, mongo)

        failures: list[str] = []
        publisher = threading.Thread(target=_publish_steadily, args=(profiles, failures))
        publisher.start()
        time.sleep(FAULT_STARTS_AFTER_SECONDS)
        assert _run(host, inject).returncode == 0
        if recover:
            time.sleep(OUTAGE_SECONDS)
            assert _run(host, recover).returncode == 0
        publisher.join()
        assert failures == [], "the producer lost messages (acks=all)"

        ids = [uuid.UUID(profile["login"]["uuid"]) for profile in profiles]
        try:
            eventually(lambda: _stored_all(cassandra, ids), 600, "every profile stored")
        except pytest.fail.Exception:
            pytest.fail(_what_is_missing(cassandra, profiles))
        aggregates_match_cassandra(cassandra, mongo)
        latencies = _write_latencies(cassandra, ids)
        worst = max(latencies)
        record_property("worst_write_latency_seconds", round(worst, 1))
        print(f"{fault}: {len(ids)} stored once, worst produce-to-Cassandra latency {worst:.1f} s")
        if fault == "ferretdb-stopped":
            assert worst < 15, f"Cassandra writes paused {worst:.0f} s while MongoDB was down"
    finally:
        ssh("kafka1", "systemctl start bdf-producer")
        if recover:
            _run(host, recover)
