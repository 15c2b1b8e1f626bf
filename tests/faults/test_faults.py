"""Faults on the deployed lab while a fixed set of profiles is published at a steady rate.

Each fault (the job or the broker killed with SIGKILL, the Spark master restarted,
Cassandra or FerretDB stopped for a minute, the store host's power cut for a minute) must
lose nothing and count nothing twice: every published profile is stored once and the
aggregates grow by an independent count of them. While FerretDB is down, profiles must
keep reaching Cassandra (the stores fail independently). With TLS on, a certificate
rotation (`make rotate-certs`: every host's services restarted, one host at a time) under
a steady 500 profiles/s must lose nothing either.

On a cluster lab (``LAB_INVENTORY=inventory/lab-cluster``, three brokers) more faults run
under a steady ``BDF_FAULT_RATE`` profiles/s (default 1,000): every broker killed with
SIGKILL in turn, the partition leader first, then each restarted cleanly; a Cassandra
node stopped for two minutes, with no failed write at LOCAL_QUORUM; a rolling restart of
every group (`make restart GROUP=...`), with the job never restarting and each host
waiting for its gate; a Spark worker host's power cut, the job going on with the other.
On the grown cluster lab (``inventory/lab-cluster-grown`` deployed: a fourth broker and
Cassandra node), the README's scale-out under the same load: the partitions reassigned
onto every broker, then `nodetool cleanup` on each older Cassandra node.

Run with ``make faults`` (LAB=1, after ``make demo`` or ``make e2e``); 3 to 8 minutes a
fault, 8 to 10 for the rotation.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import pytest

from jobs.randomuser_server import generate_users
from tests.factories import generated_profiles
from tests.lab import (
    CASSANDRA_HOST,
    CASSANDRA_HOSTS,
    DLQ,
    HOSTS,
    INVENTORY_DIR,
    KAFKA_HOSTS,
    LAB_ENV,
    LAB_ONLY,
    MONGODB_HOST,
    NODETOOL,
    PRODUCER_HOST,
    REPO,
    SPARK_MASTER_HOST,
    SPARK_WORKER_HOSTS,
    STREAM_HOST,
    TLS,
    TLS_PORTS,
    TOPIC,
    aggregates_match_cassandra,
    dead_letters,
    eventually,
    group_hosts,
    kafka_conf,
    restarts,
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
        settled(mongo)

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
MIN_LOAD_SECONDS = 60
HOST_CERTIFICATE = "/etc/bigdataflow/tls/host.crt"
STREAM_UNIT = "user-profiles-stream"


def _certificate_serials() -> dict[str, int]:
    """Each host's certificate serial (roles/tls installs host.crt), by host."""
    serials = {}
    for host in HOSTS:
        shown = ssh(host, f"openssl x509 -noout -serial -in {HOST_CERTIFICATE}")
        assert shown.returncode == 0, f"{host}: {shown.stderr}"
        serials[host] = int(shown.stdout.strip().removeprefix("serial="), 16)
    return serials


def _pages(
    seed: str, rate: int, published: list[dict], until: threading.Event, seconds: list[float]
) -> Iterator[dict]:
    """Generated profiles, one second's worth (a page of the offline source) at a time,
    until ``until`` is set and the load has lasted MIN_LOAD_SECONDS (then into
    ``seconds``); each page goes into ``published`` before it is published."""
    started = time.monotonic()
    for page in itertools.count(1):
        if until.is_set() and time.monotonic() - started >= MIN_LOAD_SECONDS:
            seconds.append(time.monotonic() - started)
            return
        profiles = generate_users(rate, seed, page)
        published.extend(profiles)
        yield from profiles


@dataclasses.dataclass
class Load:
    profiles: int
    seconds: float
    rate: float


def _under_load(name: str, rate: int, action: Callable[[], None], cassandra, mongo, record_property) -> Load:
    """``action()`` while profiles are published at a steady ``rate``, from 10 s before it
    until it has returned (MIN_LOAD_SECONDS at the least); then every published profile must
    be stored once and the aggregates must equal an independent count."""
    published: list[dict] = []
    done = threading.Event()
    failures: list[str] = []
    seconds: list[float] = []
    assert ssh(PRODUCER_HOST, "systemctl stop bdf-producer").returncode == 0
    try:
        settled(mongo)
        pages = _pages(f"{name}-{uuid.uuid4().hex[:6]}", rate, published, done, seconds)
        publisher = threading.Thread(target=_publish_steadily, args=(pages, failures, rate))
        publisher.start()
        try:
            time.sleep(FAULT_STARTS_AFTER_SECONDS)
            action()
        finally:
            done.set()
            publisher.join()
        assert failures == [], "the producer lost messages (acks=all)"
        load = Load(len(published), seconds[0], len(published) / seconds[0])
        record_property("published_per_second", round(load.rate))
        assert load.rate >= 0.9 * rate, f"{load.rate:.0f} profiles/s: this machine did not keep up"

        ids = [uuid.UUID(profile["login"]["uuid"]) for profile in published]
        assert len(set(ids)) == len(ids)
        try:
            eventually(lambda: _stored_all(cassandra, ids), 600, "every profile stored")
        except pytest.fail.Exception:
            pytest.fail(_what_is_missing(cassandra, published))
        aggregates_match_cassandra(cassandra, mongo)
        print(f"{name}: {load.profiles} profiles at {load.rate:.0f}/s for {load.seconds:.0f} s, stored once")
        return load
    finally:
        ssh(PRODUCER_HOST, "systemctl start bdf-producer")


@pytest.mark.skipif(not TLS, reason="the lab runs without TLS: no certificate to rotate (LAB_TLS=1)")
def test_a_certificate_rotation_under_load_loses_nothing(cassandra, mongo, record_property):
    """`make rotate-certs INVENTORY=<the lab's inventory>` under a steady 500 profiles/s:
    every host gets a certificate with a new serial, which every TLS port presents
    afterwards; nothing is lost or counted twice. About 8 to 10 minutes: the rotation
    restarts Kafka, the dashboard, Cassandra and FerretDB, one host at a time, each gated on
    its health (4 to 6 minutes on the lab); then the job catches up and the checks read
    every profile back."""
    before = _certificate_serials()

    def rotate() -> None:
        rotation = _make("rotate-certs")
        assert rotation.returncode == 0, rotation.stdout[-3000:] + rotation.stderr[-2000:]

    _under_load("rotation", ROTATION_RATE_PER_SECOND, rotate, cassandra, mongo, record_property)
    after = _certificate_serials()
    assert [host for host in HOSTS if after[host] == before[host]] == [], "certificates not renewed"
    for service, (host, port) in TLS_PORTS.items():
        _, certificate = tls_handshake(host, port)
        assert certificate.serial_number == after[host], f"{service} still presents the old certificate"


def _make(target: str, *variables: str) -> subprocess.CompletedProcess[str]:
    """An operator's make target on the lab's inventory."""
    inventory = f"INVENTORY={os.path.relpath(INVENTORY_DIR, REPO)}"
    return subprocess.run(  # noqa: S603 - the operator's command
        ["make", target, inventory, *variables],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


# --- a cluster lab: three brokers, three Cassandra nodes, two workers ---------------------------------

CLUSTER_ONLY = pytest.mark.skipif(
    len(KAFKA_HOSTS) < 3 or len(CASSANDRA_HOSTS) < 3 or len(SPARK_WORKER_HOSTS) < 2,
    reason="needs the cluster lab (LAB_INVENTORY=inventory/lab-cluster)",
)
CLUSTER_RATE = int(os.environ.get("BDF_FAULT_RATE", "1000"))
CASSANDRA_NODE_DOWN_SECONDS = 120


def _kafka_metadata():
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka_conf("producer")).list_topics(TOPIC, timeout=30)


def _partition_leader_host(partition: int = 0) -> str:
    metadata = _kafka_metadata()
    leader = metadata.brokers[metadata.topics[TOPIC].partitions[partition].leader].host
    return next(name for name, address in HOSTS.items() if address == leader)


def _fully_replicated() -> bool | None:
    try:
        partitions = _kafka_metadata().topics[TOPIC].partitions.values()
    except Exception:  # a broker down answers nothing; the others will
        return None
    return all(len(p.isrs) == len(p.replicas) for p in partitions) or None


def _job_unchanged() -> Callable[[], None]:
    """A check that the stream job has not restarted since this call (its PID and systemd's
    restart count: "active" alone hides a crash loop)."""

    def state() -> tuple[int, str]:
        pid = ssh(STREAM_HOST, f"systemctl show -p MainPID --value {STREAM_UNIT}").stdout.strip()
        return restarts(STREAM_HOST, STREAM_UNIT), pid

    before = state()

    def check() -> None:
        assert state() == before, f"the stream job restarted: (NRestarts, MainPID) {before} -> {state()}"

    return check


def _job_journal_since(started: float, pattern: str) -> list[str]:
    shown = ssh(STREAM_HOST, f"journalctl -u {STREAM_UNIT} --since @{int(started)} -o cat --no-pager")
    return [line[:300] for line in shown.stdout.splitlines() if pattern in line]


@CLUSTER_ONLY
def test_every_broker_killed_then_restarted_in_turn_loses_nothing(cassandra, mongo, record_property):
    """Kafka's replication-test bar: SIGKILL of the partition leader, then of each other
    broker, each back and the partitions fully replicated before the next; then a clean
    restart of each. Every acknowledged profile stored once."""

    def kill_and_restart_each_broker() -> None:
        leader = _partition_leader_host()
        for host in [leader, *(host for host in KAFKA_HOSTS if host != leader)]:
            # The JVM alone (--kill-whom=main): systemd 252 fails the call when a helper
            # process of the unit cannot be signalled, after killing the JVM.
            assert ssh(host, "systemctl kill -s KILL --kill-whom=main kafka").returncode == 0
            time.sleep(15)
            ssh(host, "systemctl start kafka")  # systemd restarts it (on-failure) unless it has
            eventually(_fully_replicated, 300, f"every partition fully replicated after {host}'s kill")
        for host in KAFKA_HOSTS:
            assert ssh(host, "systemctl restart kafka").returncode == 0
            eventually(_fully_replicated, 300, f"every partition fully replicated after {host}'s restart")

    _under_load("broker-kills", CLUSTER_RATE, kill_and_restart_each_broker, cassandra, mongo, record_property)


@CLUSTER_ONLY
def test_a_cassandra_node_down_two_minutes_fails_no_write_at_local_quorum(cassandra, mongo, record_property):
    host = CASSANDRA_HOSTS[-1]
    job_unchanged = _job_unchanged()
    started = time.time()

    def stop_a_node() -> None:
        assert ssh(host, "systemctl stop cassandra").returncode == 0
        time.sleep(CASSANDRA_NODE_DOWN_SECONDS)
        assert ssh(host, "systemctl start cassandra").returncode == 0

        def every_node_up() -> bool | None:
            status = ssh(CASSANDRA_HOSTS[0], f"{NODETOOL} status").stdout
            return status.count("\nUN ") == len(CASSANDRA_HOSTS) or None

        eventually(every_node_up, 300, "every Cassandra node Up/Normal")

    _under_load("cassandra-node-down", CLUSTER_RATE, stop_a_node, cassandra, mongo, record_property)
    job_unchanged()
    assert _job_journal_since(started, "store unavailable") == [], "a write failed at LOCAL_QUORUM"
    assert _job_journal_since(started, "profiles batch failed") == []


ROLLING_GROUPS = ("kafka", "cassandra", "spark_workers", "spark_master", "mongodb", "dashboard")


@CLUSTER_ONLY
def test_a_rolling_restart_of_every_group_loses_nothing_and_the_job_never_restarts(
    cassandra, mongo, record_property
):
    job_unchanged = _job_unchanged()
    logs: dict[str, str] = {}

    def restart_every_group() -> None:
        for group in ROLLING_GROUPS:
            restart = _make("restart", f"GROUP={group}")
            assert restart.returncode == 0, f"{group}: {restart.stdout[-3000:]}{restart.stderr[-2000:]}"
            logs[group] = restart.stdout

    _under_load("rolling-restart", CLUSTER_RATE, restart_every_group, cassandra, mongo, record_property)
    job_unchanged()
    for group, log in logs.items():
        for host in group_hosts(group):
            assert f"{host}: restarted, waited" in log, f"{group}: no gate reported for {host}"


@CLUSTER_ONLY
def test_the_job_goes_on_when_a_worker_host_loses_power(cassandra, mongo, record_property):
    worker = SPARK_WORKER_HOSTS[-1]
    assert worker != STREAM_HOST, "the driver must not run on the worker that dies"
    job_unchanged = _job_unchanged()

    def cut_a_workers_power() -> None:
        assert _run(CONTROL_NODE, f"{LAB_SH} poweroff {worker}").returncode == 0
        time.sleep(OUTAGE_SECONDS)

    try:
        _under_load("worker-power-cut", CLUSTER_RATE, cut_a_workers_power, cassandra, mongo, record_property)
        job_unchanged()
    finally:
        _run(CONTROL_NODE, f"{LAB_SH} up")


# --- a grown cluster lab (inventory/lab-cluster-grown): one broker and one Cassandra node more -------

SCALE_OUT_ONLY = pytest.mark.skipif(
    len(KAFKA_HOSTS) < 4 or len(CASSANDRA_HOSTS) < 4,
    reason="needs the grown cluster lab (LAB_INVENTORY=inventory/lab-cluster-grown, deployed)",
)
REASSIGN = (
    "B=$(hostname -I | cut -d' ' -f1):9092; /opt/kafka/bin/kafka-reassign-partitions.sh"
    " --bootstrap-server $B --command-config /etc/kafka/admin-client.properties"
)


def _replicas_by_broker() -> collections.Counter[int]:
    partitions = _kafka_metadata().topics[TOPIC].partitions.values()
    return collections.Counter(broker for p in partitions for broker in p.replicas)


@SCALE_OUT_ONLY
def test_partitions_move_onto_a_new_broker_and_cassandra_cleans_up_under_load(
    cassandra, mongo, record_property
):
    """The README's scale-out, after `make deploy` of the grown inventory: Kafka's own
    reassignment (generate, execute with a throttle, verify) spreads the topics over every
    broker, then `nodetool cleanup` runs on each older Cassandra node in turn, all under a
    steady load: every profile stored once, the job never restarts."""
    admin_host = KAFKA_HOSTS[0]
    brokers = ",".join(str(b) for b in sorted(_kafka_metadata().brokers))
    job_unchanged = _job_unchanged()

    def reassign_then_clean_up() -> None:
        topics = json.dumps({"version": 1, "topics": [{"topic": TOPIC}, {"topic": DLQ}]})
        generated = ssh(
            admin_host,
            f"echo '{topics}' > /tmp/move.json && {REASSIGN} --topics-to-move-json-file /tmp/move.json"
            f" --broker-list {brokers} --generate",
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        plan = generated.stdout.split("Proposed partition reassignment configuration")[1].strip()
        executed = ssh(
            admin_host,
            f"echo '{plan}' > /tmp/plan.json && {REASSIGN} --reassignment-json-file /tmp/plan.json"
            " --execute --throttle 10000000",
        )
        assert executed.returncode == 0, executed.stdout + executed.stderr

        def reassignment_complete() -> bool | None:
            verified = ssh(admin_host, f"{REASSIGN} --reassignment-json-file /tmp/plan.json --verify")
            return (verified.returncode == 0 and "is still in progress" not in verified.stdout) or None

        eventually(reassignment_complete, 600, "the reassignment verified (throttle removed)", interval=15)
        eventually(_fully_replicated, 300, "every partition fully replicated after the reassignment")
        for host in CASSANDRA_HOSTS[:-1]:
            cleaned = ssh(host, f"{NODETOOL} cleanup user_profiles", timeout=1200)
            assert cleaned.returncode == 0, f"{host}: {cleaned.stdout}{cleaned.stderr}"

    _under_load("scale-out", CLUSTER_RATE, reassign_then_clean_up, cassandra, mongo, record_property)
    job_unchanged()
    replicas = _replicas_by_broker()
    record_property("replicas_by_broker", dict(replicas))
    assert set(replicas) == set(_kafka_metadata().brokers), f"a broker holds no replica: {replicas}"
    status = ssh(CASSANDRA_HOSTS[0], f"{NODETOOL} status").stdout
    assert status.count("\nUN ") == len(CASSANDRA_HOSTS), status
