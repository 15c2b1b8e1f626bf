"""What the lab tests and the benchmark share: the deployed lab's addresses, secrets, shell.

The lab is `make deploy INVENTORY=inventory/lab` on the machines of `lab/lab.sh`; another
lab (inventory/lab-cluster) with LAB_INVENTORY, the variable lab/lab.sh and the Makefile
read. Hosts are found by their inventory groups (group_hosts), never by name.
Credentials come from the deployment's generated secrets (.secrets/<deployment>/, the
deployment being the inventory's bdf_deployment or else its folder's name, as
roles/bdf_secrets names it); every address is a lab machine on the project's own bridge.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import json
import os
import re
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from bdf import clients
from bdf.config import CassandraConnection, Credentials, KafkaConnection, MongoConnection
from jobs.aggregates import BATCHES_COLLECTION
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[1]
# The lab's inventory folder as commands name it (relative to the repository, or absolute).
INVENTORY_ARG = os.environ.get("LAB_INVENTORY", "inventory/lab").rstrip("/") or "inventory/lab"
INVENTORY_DIR = REPO / INVENTORY_ARG
# The environment of a lab/lab.sh run on this lab, from any directory.
LAB_ENV = os.environ | {"LAB_INVENTORY": str(INVENTORY_DIR)}
INVENTORY = yaml.safe_load((INVENTORY_DIR / "hosts.yml").read_text())
# bdf_deployment: the inventory's own setting (a grown inventory names the deployment it
# grows), else the inventory folder's name; its generated secrets live under it.
DEPLOYMENT = (INVENTORY["all"].get("vars") or {}).get("bdf_deployment") or INVENTORY_DIR.resolve().name
SECRETS = REPO / ".secrets" / DEPLOYMENT
HOSTS = {name: v["ansible_host"] for name, v in INVENTORY["all"]["hosts"].items()}


def _inventory_groups(root: dict) -> dict[str, set[str]]:
    """lab/topology.py's reading of the inventory's groups (lab/ is no package)."""
    spec = importlib.util.spec_from_file_location("lab_topology", REPO / "lab" / "topology.py")
    topology = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(topology)
    return topology.inventory_groups(root)


_GROUPS = _inventory_groups(INVENTORY["all"])


def group_hosts(group: str) -> list[str]:
    """The lab's hosts of an inventory group (and its children), in hosts.yml order;
    KeyError when the inventory has no such group."""
    if not _GROUPS.get(group):
        raise KeyError(f"{INVENTORY_DIR / 'hosts.yml'}: no host in group {group!r}")
    return [name for name in HOSTS if name in _GROUPS[group]]


def by_host(*pairs: tuple[str, list[str]]) -> dict[str, list[str]]:
    """(host, items) pairs merged by host in their order, each item once: on a small lab
    one host has several roles."""
    merged: dict[str, list[str]] = {}
    for host, items in pairs:
        merged.setdefault(host, []).extend(i for i in items if i not in merged.get(host, []))
    return merged


# The hosts the tests act on, by role.
KAFKA_HOSTS = group_hosts("kafka")
CASSANDRA_HOSTS = group_hosts("cassandra")
CASSANDRA_HOST = CASSANDRA_HOSTS[0]  # nodetool, the node's files
NODETOOL = "CASSANDRA_CONF=/etc/cassandra /opt/cassandra/bin/nodetool"  # as root on a Cassandra node
PRODUCER_HOST = group_hosts("producer")[0]  # bdf-producer, bdf-randomuser
STREAM_HOST = group_hosts("stream_job")[0]  # the stream job's driver
SPARK_MASTER_HOST = group_hosts("spark_master")[0]
SPARK_WORKER_HOSTS = group_hosts("spark_workers")
MONGODB_HOST = group_hosts("mongodb")[0]  # FerretDB
DASHBOARD_HOST = group_hosts("dashboard")[0]

# Every broker, as bootstrap.servers and --bootstrap-server take them.
KAFKA = ",".join(f"{HOSTS[host]}:9092" for host in KAFKA_HOSTS)
TOPIC, DLQ = "user_profiles", "user_profiles_dlq"
KEYSPACE, TABLE = "user_profiles", "profiles"
AGGREGATES_DB = "user_profiles"  # MongoDB
# The erasures the tests made on this deployment (bdf-gdpr's log): the aggregates keep
# counting erased people, so stored rows + erased rows == the total.
ERASURE_LOG = SECRETS / "gdpr-erasures.jsonl"


GROUP_VARS = yaml.safe_load((INVENTORY_DIR / "group_vars" / "all.yml").read_text()) or {}
# The Linux bridge of the lab's machines, on this machine (lab/lab.sh).
BRIDGE = GROUP_VARS["lab_bridge"]


def _tls_enabled() -> bool:
    """Whether the lab was deployed with bdf_tls_enabled: LAB_TLS=1 or 0, else the lab
    inventory's group_vars, else the roles' default."""
    if os.environ.get("LAB_TLS") in ("0", "1"):
        return os.environ["LAB_TLS"] == "1"
    defaults = yaml.safe_load((REPO / "roles" / "bdf_defaults" / "defaults" / "main.yml").read_text())
    return bool(GROUP_VARS.get("bdf_tls_enabled", defaults["bdf_tls_enabled"]))


TLS = _tls_enabled()
# The deployment CA as the control node keeps it (roles/tls): what every lab client trusts.
CA_FILE = SECRETS / "tls" / "ca.crt"
MONGODB = f"{HOSTS[MONGODB_HOST]}:27017"
# The dashboard, HTTPS only with TLS.
DASHBOARD_URL = f"{'https' if TLS else 'http'}://{HOSTS[DASHBOARD_HOST]}:8050/"

# Every TLS listener of a lab deployed with bdf_tls_enabled, (host, port) by service, on
# the first host of the service's group: Kafka's client and controller listeners, CQL,
# Cassandra's internode port, FerretDB, the dashboard.
TLS_PORTS = {
    "kafka": (KAFKA_HOSTS[0], 9092),
    "kafka-controller": (KAFKA_HOSTS[0], 9093),
    "cql": (CASSANDRA_HOST, 9042),
    "cassandra-internode": (CASSANDRA_HOST, 7000),
    "mongodb": (MONGODB_HOST, 27017),
    "dashboard": (DASHBOARD_HOST, 8050),
}

LAB_ONLY = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("LAB") != "1", reason="needs the deployed lab: set LAB=1"),
]


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


@functools.cache
def message_keys():
    """The deployment's message keys (the control node's key file): what the producer seals with."""
    from jobs.message_crypto import load_message_keys

    return load_message_keys(SECRETS / "profile-keys.json")


def sealed(value: bytes | str, topic: str = TOPIC) -> bytes:
    """``value`` as bdf-producer publishes it: sealed by the same helper, for ``topic``."""
    return message_keys().seal(value.encode() if isinstance(value, str) else value, topic)


def ssh(host: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``command`` run as root on the lab machine ``host`` (lab/lab.sh ssh, on this lab)."""
    return subprocess.run(  # noqa: S603 - fixed command
        ["bash", str(REPO / "lab" / "lab.sh"), "ssh", host, command],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=LAB_ENV,
    )


def kafka_conf(user: str | None, password: str | None = None) -> dict[str, str]:
    """confluent-kafka settings for ``user`` (its deployment password unless given); None: anonymous."""
    conf = {"bootstrap.servers": KAFKA, "socket.timeout.ms": "10000"}
    if user:
        login = Credentials(
            username=user, password=password if password is not None else secret(f"kafka-{user}")
        )
        conf |= clients.kafka_config(kafka_connection(), login)
    return conf


def kafka_connection() -> KafkaConnection:
    """The lab's brokers, SASL_SSL verified against the lab CA when the lab runs TLS."""
    if TLS:
        return KafkaConnection(
            bootstrap_servers=KAFKA.split(","), security_protocol="SASL_SSL", ca_file=CA_FILE
        )
    return KafkaConnection(bootstrap_servers=KAFKA.split(","))


def cassandra_connection() -> CassandraConnection:
    """The lab's Cassandra nodes, over TLS verified against the lab CA when the lab runs TLS."""
    nodes = [HOSTS[host] for host in CASSANDRA_HOSTS]
    return CassandraConnection(hosts=nodes, tls=TLS, ca_file=CA_FILE if TLS else None)


def mongo_connection(**fields) -> MongoConnection:
    """The lab's FerretDB, over TLS verified against the lab CA when the lab runs TLS."""
    return MongoConnection(hosts=[MONGODB], tls=TLS, ca_file=CA_FILE if TLS else None, **fields)


def stream_mongo_client():
    """A MongoClient on the lab's aggregates database as the stream job's user."""
    return clients.mongo_client(
        mongo_connection(auth_source=AGGREGATES_DB),
        Credentials(username="stream", password=secret("mongodb-app")),
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=10_000,
        socketTimeoutMS=60_000,
    )


def cassandra_cluster(user: str, secret_name: str, **options):
    """A Cluster (bdf.clients) on the lab's Cassandra as ``user`` with a deployment password."""
    login = Credentials(username=user, password=secret(secret_name))
    return clients.cassandra_cluster(cassandra_connection(), login, **options)


def tls_handshake(host: str, port: int, ca_file: Path = CA_FILE, timeout: float = 10):
    """(TLS version, the server's certificate) after a handshake with ``host``'s ``port``
    that verified the chain against ``ca_file`` and the host's address, as every lab client
    does; ssl.SSLCertVerificationError when the certificate does not pass."""
    from cryptography import x509

    address = HOSTS[host]
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((address, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=address) as tls,
    ):
        return tls.version(), x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def personal_needles(users: Iterable[dict]) -> set[bytes]:
    """What a scan for readable personal data looks for, as UTF-8 bytes: each email, and
    each first and last name, street name, phone and cell as a JSON member (compact, as
    bdf-producer's orjson writes it, and with json.dumps' space), and also bare when it
    is 8 bytes or longer (shorter, a bare value could turn up in any binary by chance)."""
    needles = set()
    for user in users:
        needles.add(user["email"].encode())
        fields = {
            "first": user["name"]["first"],
            "last": user["name"]["last"],
            "name": user["location"]["street"]["name"],
            "phone": user["phone"],
            "cell": user["cell"],
        }
        for field, value in fields.items():
            member = json.dumps({field: value}, ensure_ascii=False)[1:-1]
            needles |= {member.encode(), member.replace('": ', '":', 1).encode()}
            if len(value.encode()) >= 8:
                needles.add(value.encode())
    return needles


def needle_pattern(needles: Iterable[bytes]) -> re.Pattern[bytes]:
    """One regular expression matching any of ``needles``, as a trie (one branch per next
    byte): a flat alternation of thousands of needles scans a megabyte in seconds, this
    scans a hundred in seconds."""
    trie: dict = {}
    for needle in needles:
        node = trie
        for byte in needle:
            node = node.setdefault(byte, {})
        node[None] = {}  # a needle ends here

    def branch(node: dict) -> bytes:
        following = sorted(byte for byte in node if byte is not None)
        children = [re.escape(bytes([byte])) + branch(node[byte]) for byte in following]
        if not children:
            return b""
        body = children[0] if len(children) == 1 else b"(?:" + b"|".join(children) + b")"
        return b"(?:" + body + b")?" if None in node else body

    return re.compile(branch(trie))


def erased_rows() -> int:
    if not ERASURE_LOG.exists():
        return 0
    entries = (json.loads(line) for line in ERASURE_LOG.read_text().splitlines() if line.strip())
    return sum(entry.get("rows_deleted", 0) for entry in entries)


def service_active(host: str, unit: str) -> bool:
    return ssh(host, f"systemctl is-active {unit}").stdout.strip() == "active"


def restarts(host: str, unit: str) -> int:
    """systemd's restart count of a unit: "active" alone hides a crash loop."""
    return int(ssh(host, f"systemctl show -p NRestarts --value {unit}").stdout.strip())


def stored_count(cassandra) -> int:
    # Every partition at LOCAL_QUORUM: tens of seconds on a busy three-node ring.
    return cassandra.execute("SELECT count(*) FROM profiles", timeout=120).one()["count"]


def stored_ids(cassandra, ids: list[uuid.UUID], attempts: int = 5) -> set[uuid.UUID]:
    """Those of ``ids`` Cassandra holds (50 partition keys per query). A query that times
    out is asked again, up to ``attempts`` times: a ring replaying hints to a node that
    came back answered LOCAL_QUORUM reads with server timeouts for a while, and the login's
    permission check (system_auth, also at quorum) with an Unauthorized that timed out."""
    from cassandra import OperationTimedOut, ReadTimeout, Unauthorized

    select = cassandra.prepare("SELECT user_id FROM profiles WHERE user_id IN ?")
    found: set[uuid.UUID] = set()
    for start in range(0, len(ids), 50):
        for attempt in range(1, attempts + 1):
            try:
                rows = cassandra.execute(select, [ids[start : start + 50]], timeout=60)
                break
            except (ReadTimeout, OperationTimedOut, Unauthorized) as error:
                timed_out = not isinstance(error, Unauthorized) or "timed out" in str(error)
                if attempt == attempts or not timed_out:
                    raise
                time.sleep(2**attempt)
        found.update(row["user_id"] for row in rows)
    return found


def stored_of(cassandra, ids: list[uuid.UUID]) -> int:
    return len(stored_ids(cassandra, ids))


def aggregate_counts(mongo, collection: str) -> dict[str, int]:
    return {doc["_id"]: doc["users"] for doc in mongo[collection].find()}


def settled(mongo, quiet_seconds: float = 12, timeout: float = 600) -> tuple[str | None, int]:
    """(the job's newest profile batch, aggregate total) once neither moves for
    ``quiet_seconds``. Reads the job's batch records, not the profile table: a count over
    every partition times out on a busy three-node ring."""

    def state() -> tuple[str | None, int]:
        newest = mongo[BATCHES_COLLECTION].find_one(
            {"query": "profiles"}, sort=[("at", -1)], projection={"_id": 1}
        )
        return newest and newest["_id"], aggregate_counts(mongo, "totals").get("all", 0)

    def still() -> tuple[str | None, int] | None:
        first = state()
        time.sleep(quiet_seconds)
        second = state()
        return second if first == second else None

    return eventually(still, timeout, "the pipeline to settle")


def aggregates_match_cassandra(cassandra, mongo, timeout: float = 300) -> None:
    """Wait until the aggregates equal an independent count: Cassandra's rows per
    nationality plus the people erased since they were counted (counts are not personal)."""
    erased = erased_rows()

    seen: dict = {}

    def matching() -> bool | None:
        rows = cassandra.execute("SELECT nationality FROM profiles")
        stored = collections.Counter(row["nationality"] for row in rows)
        counted = aggregate_counts(mongo, "users_by_nationality")
        surplus = {nat: counted.get(nat, 0) - stored.get(nat, 0) for nat in {*stored, *counted}}
        totals = aggregate_counts(mongo, "totals").get("all", 0)
        seen.update(stored=sum(stored.values()), totals=totals, erased=erased)
        seen["surplus"] = {nat: n for nat, n in sorted(surplus.items()) if n}
        return (
            min(surplus.values(), default=0) >= 0
            and sum(surplus.values()) == erased == totals - sum(stored.values())
        ) or None

    eventually(
        matching,
        timeout,
        "the aggregates to equal Cassandra's rows per nationality (+ erased)",
        explain=lambda: f"{seen}; {job_state()}",
    )


def job_state() -> str:
    """The stream job's restarts and its last warnings and errors: what a timed-out wait
    on the pipeline needs to tell a slow job from a wedged or diverging one."""
    restarts_now = restarts(STREAM_HOST, "user-profiles-stream")
    journal = ssh(
        STREAM_HOST,
        "journalctl -u user-profiles-stream --since -15min -o cat"
        ' | grep -E \'"level": "(WARNING|ERROR)"\' | tail -n 5 | cut -c1-400',
    ).stdout.strip()
    return f"job NRestarts={restarts_now}, its last warnings: {journal or 'none'}"


def dead_letters(markers: set[bytes], timeout: float) -> dict[bytes, tuple[dict[str, str], bytes]]:
    """The dead letters keyed by one of ``markers``: (headers, value) by key (read as the admin,
    from the start of the topic, until all are found or ``timeout`` seconds pass)."""
    from confluent_kafka import Consumer

    group = f"dead-letter-check-{uuid.uuid4()}"
    consumer = Consumer(kafka_conf("admin") | {"group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([DLQ])
    found: dict[bytes, tuple[dict[str, str], bytes]] = {}
    try:
        deadline = time.monotonic() + timeout
        while set(found) != markers and time.monotonic() < deadline:
            message = consumer.poll(2)
            if message is not None and not message.error() and message.key() in markers:
                found[message.key()] = ({k: v.decode() for k, v in message.headers()}, message.value())
    finally:
        consumer.close()
    return found
