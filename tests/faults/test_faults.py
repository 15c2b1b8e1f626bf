"""Faults on the deployed lab while a fixed set of profiles is published at a steady rate.

Each fault (the job or the broker killed with SIGKILL, the Spark master restarted,
Cassandra or FerretDB stopped for a minute, the store host's power cut for a minute) must
lose nothing and count nothing twice: every published profile is stored once and the
aggregates grow by an independent count of them. While FerretDB is down, profiles must
keep reaching Cassandra (the stores fail independently). With TLS on, a certificate
rotation (`make rotate-certs`: every host's services restarted, one host at a time) under
a steady 500 profiles/s must lose nothing either.

Run with ``make faults`` (LAB=1, after ``make demo`` or ``make e2e``); 3 to 8 minutes a
fault, 8 to 10 for the rotation.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import pytest

from jobs.randomuser_server import generate_users
from tests.factories import generated_profiles
from tests.lab import (
    CASSANDRA_HOST,
    HOSTS,
    INVENTORY_DIR,
    KAFKA_HOSTS,
    LAB_ENV,
    LAB_ONLY,
    MONGODB_HOST,
    PRODUCER_HOST,
    REPO,
    SPARK_MASTER_HOST,
    STREAM_HOST,
    TLS,
    TLS_PORTS,
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
    tls_handshake,
)

pytestmark = LAB_ONLY
PROFILES_PER_FAULT = 3_000
RATE_PER_SECOND = 50  # 60 s of traffic: the fault lies inside it
FAULT_STARTS_AFTER_SECONDS = 10
OUTAGE_SECONDS = 60
LAB_SH = str(REPO / "lab" / "lab.sh")
CONTROL_NODE = None  # a fault injected with lab/lab.sh on this machine, not over ssh

# fault: (host, inject, recover); on a cluster, the first broker and Cassandra node.
FAULTS = {
    "job-sigkill": (STREAM_HOST, "systemctl kill -s KILL user-profiles-stream", None),
    "broker-sigkill": (KAFKA_HOSTS[0], "systemctl kill -s KILL kafka", None),
    "spark-master-restart": (SPARK_MASTER_HOST, "systemctl restart spark-master", None),
    "cassandra-stopped": (CASSANDRA_HOST, "systemctl stop cassandra", "systemctl start cassandra"),
    "ferretdb-stopped": (MONGODB_HOST, "systemctl stop ferretdb", "systemctl start ferretdb"),
    # The first Cassandra node's machine dies with no shutdown; `up` boots it. On the small
    # lab that host holds FerretDB and PostgreSQL too; on the cluster lab, a broker.
    "store-host-power-cut": (CONTROL_NODE, f"{LAB_SH} poweroff {CASSANDRA_HOST}", f"{LAB_SH} up"),
}


def _run(host: str | None, command: str) -> subprocess.CompletedProcess[str]:
    if host is CONTROL_NODE:
        return subprocess.run(  # noqa: S603
            command.split(), capture_output=True, text=True, timeout=300, check=False, env=LAB_ENV
        )
    return ssh(host, command)


def _publish_steadily(profiles: Iterable[dict], failures: list[str], rate: float = RATE_PER_SECOND) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka_conf("producer") | {"acks": "all", "enable.idempotence": True})

    def delivered(error, _message) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.monotonic()
    try:
        for index, profile in enumerate(profiles):
            producer.produce(
                TOPIC,
                key=profile["login"]["uuid"].encode(),
                value=sealed(json.dumps(profile)),
                on_delivery=delivered,
            )
            producer.poll(0)
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
    except Exception as error:  # the test reads failures: a dead thread alone says nothing
        failures.append(f"publishing stopped: {error!r}")
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
    assert ssh(PRODUCER_HOST, "systemctl stop bdf-producer").returncode == 0
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
        ssh(PRODUCER_HOST, "systemctl start bdf-producer")
        if recover:
            _run(host, recover)


ROTATION_RATE_PER_SECOND = 500
ROTATION_MIN_LOAD_SECONDS = 60
HOST_CERTIFICATE = "/etc/bigdataflow/tls/host.crt"


def _certificate_serials() -> dict[str, int]:
    """Each host's certificate serial (roles/tls installs host.crt), by host."""
    serials = {}
    for host in HOSTS:
        shown = ssh(host, f"openssl x509 -noout -serial -in {HOST_CERTIFICATE}")
        assert shown.returncode == 0, f"{host}: {shown.stderr}"
        serials[host] = int(shown.stdout.strip().removeprefix("serial="), 16)
    return serials


def _pages(seed: str, published: list[dict], until: threading.Event, seconds: list[float]) -> Iterator[dict]:
    """Generated profiles, one second's worth (a page of the offline source) at a time,
    until ``until`` is set and the load has lasted ROTATION_MIN_LOAD_SECONDS (then into
    ``seconds``); each page goes into ``published`` before it is published."""
    started = time.monotonic()
    for page in itertools.count(1):
        if until.is_set() and time.monotonic() - started >= ROTATION_MIN_LOAD_SECONDS:
            seconds.append(time.monotonic() - started)
            return
        profiles = generate_users(ROTATION_RATE_PER_SECOND, seed, page)
        published.extend(profiles)
        yield from profiles


@pytest.mark.skipif(not TLS, reason="the lab runs without TLS: no certificate to rotate (LAB_TLS=1)")
def test_a_certificate_rotation_under_load_loses_nothing(cassandra, mongo, record_property):
    """`make rotate-certs INVENTORY=<the lab's inventory>` while profiles are published at a steady
    500/s, from 10 s before it until it has ended (60 s at the least): every host gets a
    certificate with a new serial, which every TLS port presents afterwards; every
    published profile is stored once and the aggregates equal an independent count.
    About 8 to 10 minutes: the rotation restarts Kafka, the dashboard, Cassandra and
    FerretDB, one host at a time, each gated on its health (4 to 6 minutes on the lab);
    then the job catches up and the checks read every profile back."""
    before = _certificate_serials()
    published: list[dict] = []
    rotated = threading.Event()
    assert ssh(PRODUCER_HOST, "systemctl stop bdf-producer").returncode == 0
    try:
        settled(cassandra, mongo)
        failures: list[str] = []
        seconds: list[float] = []
        pages = _pages(f"rotation-{uuid.uuid4().hex[:6]}", published, rotated, seconds)
        publisher = threading.Thread(
            target=_publish_steadily, args=(pages, failures, ROTATION_RATE_PER_SECOND)
        )
        publisher.start()
        try:
            time.sleep(FAULT_STARTS_AFTER_SECONDS)
            rotation = subprocess.run(  # noqa: S603 - the operator's command
                ["make", "rotate-certs", f"INVENTORY={os.path.relpath(INVENTORY_DIR, REPO)}"],  # noqa: S607
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
        finally:
            rotated.set()
            publisher.join()
        assert rotation.returncode == 0, rotation.stdout[-3000:] + rotation.stderr[-2000:]
        assert failures == [], "the producer lost messages (acks=all)"
        rate = len(published) / seconds[0]
        record_property("published_per_second", round(rate))
        assert rate >= 0.9 * ROTATION_RATE_PER_SECOND, f"{rate:.0f} profiles/s: this machine did not keep up"

        after = _certificate_serials()
        assert [host for host in HOSTS if after[host] == before[host]] == [], "certificates not renewed"
        for service, (host, port) in TLS_PORTS.items():
            _, certificate = tls_handshake(host, port)
            assert certificate.serial_number == after[host], f"{service} still presents the old certificate"

        ids = [uuid.UUID(profile["login"]["uuid"]) for profile in published]
        assert len(set(ids)) == len(ids)
        try:
            eventually(lambda: _stored_all(cassandra, ids), 600, "every profile stored")
        except pytest.fail.Exception:
            pytest.fail(_what_is_missing(cassandra, published))
        aggregates_match_cassandra(cassandra, mongo)
        print(f"rotation: {len(ids)} profiles at {rate:.0f}/s over {seconds[0]:.0f} s, all stored once")
    finally:
        ssh(PRODUCER_HOST, "systemctl start bdf-producer")
