"""Data-subject rights and the register's claims, on the deployed lab.

One generated person (unique email and user id) is published as the producer
principal; once the stream job has stored them, ``bdf-gdpr subject access`` must
export exactly their data, decrypted, and ``bdf-gdpr subject erase --purge`` must
make them unfindable in Cassandra (rows and data files), leaving everyone else as
they were. Then a sample of stored people is decrypted with the deployment's key file
and their emails, phones, names and street names are looked for, in plain text, in
Cassandra's data files, in MongoDB and in the journals of the job and the producer.

Runs with LAB=1 against `make deploy INVENTORY=inventory/lab`. It stops no service and
erases only the person it published; the only side effects on the lab are a
`nodetool flush` and `garbagecollect` of the profile table.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from bdf import clients
from bdf.keyring import KeyRing, load_keyring
from gdpr.model import load_register
from jobs.randomuser_server import generate_users
from tests.lab import (
    CA_FILE,
    CASSANDRA_HOST,
    CASSANDRA_HOSTS,
    DLQ,
    ERASURE_LOG,
    HOSTS,
    KEYSPACE,
    LAB_ONLY,
    MONGODB,
    NODETOOL,
    PRODUCER_HOST,
    REPO,
    SECRETS,
    SPARK_WORKER_HOSTS,
    STREAM_HOST,
    TABLE,
    TLS,
    TOPIC,
    cassandra_connection,
    eventually,
    kafka_conf,
    mongo_connection,
    sealed,
    secret,
    ssh,
)

CASSANDRA_ROOT = "/var/lib/cassandra"
CASSANDRA_DATA = f"{CASSANDRA_ROOT}/data/{KEYSPACE}"
SAMPLE_SIZE = 40
DUMP_FAILED = b"DUMP-FAILED"

pytestmark = LAB_ONLY


def bdf_gdpr(*args: str, config: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it (``bdf-gdpr`` is ``gdpr.cli:main``)."""
    return subprocess.run(  # noqa: S603 - fixed command
        [str(Path(sys.executable).with_name("bdf-gdpr")), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


# --- looking for byte strings on a lab machine -----------------------------------------------------

# Runs on the machine (its own python3): reads the files under the given roots, or stdin
# for "-", and prints which patterns (hex, comma-separated) occur, with where.
SCANNER = textwrap.dedent(
    """
    import json, os, sys
    patterns = [bytes.fromhex(h) for h in sys.argv[1].split(",") if h]
    found, size = {}, [0]
    def scan(name, data):
        size[0] += len(data)
        for index, pattern in enumerate(patterns):
            if pattern in data:
                found.setdefault(index, []).append(name)
    for root in sys.argv[2:]:
        if root == "-":
            scan("stdin", sys.stdin.buffer.read())
            continue
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as handle:
                        scan(path, handle.read())
                except OSError:
                    pass
    print(json.dumps({"found": found, "bytes": size[0]}))
    """
)


def scan(host: str, patterns: list[bytes], roots: list[str], feed: str = "") -> dict[bytes, list[str]]:
    """{pattern: [where]} for the patterns found under ``roots`` on ``host`` ("-": ``feed``'s output).

    Fails when there was nothing to read: a scan of nothing would prove nothing.
    """
    script = SCANNER.replace("'", "'\"'\"'")
    hexes = ",".join(pattern.hex() for pattern in [*patterns, DUMP_FAILED])
    command = f"python3 -c '{script}' {hexes} {' '.join(roots)}"
    if feed:
        command = f"{feed} | {command}"
    result = ssh(host, command)
    assert result.returncode == 0, f"scan on {host} failed: {result.stderr}"
    report = json.loads(result.stdout)
    assert report["bytes"] > 0, f"nothing to scan on {host} in {feed or roots}"
    found = {[*patterns, DUMP_FAILED][int(index)]: where for index, where in report["found"].items()}
    assert DUMP_FAILED not in found, f"sstabledump failed on {host}"
    return found


def sstable_dump_feed() -> str:
    """Every SSTable of the table as JSON (sstabledump): on disk they are LZ4-compressed.

    The Cassandra jars hold the tool (org.apache.cassandra.tools.SSTableExport); it needs
    the JVM options of the Cassandra clients and the node's configuration on the class path.
    """
    java = (
        'java $(grep -E "^(--add|-D)" /etc/cassandra/jvm17-clients.options) '
        '-cp "/etc/cassandra:/opt/cassandra/lib/*" -Dcassandra.config=file:///etc/cassandra/cassandra.yaml '
        "-Dlogback.configurationFile=/etc/cassandra/logback-tools.xml "
        "org.apache.cassandra.tools.SSTableExport"
    )
    return f'for f in {CASSANDRA_DATA}/{TABLE}-*/*-Data.db; do {java} "$f" || echo DUMP-FAILED; done'


def flush() -> None:
    """Every Cassandra node's memtable of the table to disk."""
    for host in CASSANDRA_HOSTS:
        result = ssh(host, f"{NODETOOL} flush {KEYSPACE} {TABLE}")
        assert result.returncode == 0, f"{host}: {result.stderr}"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> KeyRing:
    return load_keyring(SECRETS / "profile-keys.json")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """The admin host's configuration: the app roles' credentials and the deployment's key file."""
    folder = tmp_path_factory.mktemp("gdpr-lab")
    for name, username, source in (
        ("cassandra", "bigdataflow", "cassandra-app"),
        ("mongodb", "stream", "mongodb-app"),
    ):
        path = folder / f"{name}.toml"
        path.write_text(f'username = "{username}"\npassword = "{secret(source)}"\n')
        path.chmod(0o600)
    path = folder / "bigdataflow.toml"
    # With TLS the control node's CA and trust store (roles/tls keeps them beside the secrets),
    # as the roles render them.
    cassandra_tls = (
        f'tls = true\nca_file = "{CA_FILE}"\ntruststore_file = "{SECRETS / "tls" / "truststore.p12"}"\n'
        f'truststore_password_file = "{SECRETS / "tls-truststore"}"\n'
        if TLS
        else ""
    )
    mongodb_tls = f'tls = true\nca_file = "{CA_FILE}"\n' if TLS else ""
    path.write_text(
        f"[cassandra]\nhosts = {json.dumps([HOSTS[host] for host in CASSANDRA_HOSTS])}\n"
        f'credentials_file = "{folder / "cassandra.toml"}"\n'
        f"{cassandra_tls}\n"
        f'[mongodb]\nhosts = ["{MONGODB}"]\ndatabase = "user_profiles"\n'
        f'auth_source = "user_profiles"\ncredentials_file = "{folder / "mongodb.toml"}"\n{mongodb_tls}\n'
        f'[keys]\nkey_file = "{SECRETS / "profile-keys.json"}"\n'
    )
    return path


@pytest.fixture(scope="module")
def person() -> dict[str, Any]:
    """A generated profile nobody else has: fresh user id, email on a reserved test domain."""
    tag = uuid.uuid4().hex[:12]
    [profile] = generate_users(1, seed=f"gdpr-{tag}")
    profile["login"]["uuid"] = str(uuid.uuid4())
    profile["email"] = f"subject.{tag}@gdpr-lab.example.test"
    return profile


def rows_of(cassandra, pseudonym: str) -> list[dict[str, Any]]:
    return list(cassandra.execute("SELECT * FROM profiles WHERE email_pseudonym = %s", (pseudonym,)))


@pytest.fixture(scope="module")
def stored(person, cassandra, keys) -> dict[str, Any]:
    """The person published as the producer principal and stored by the stream job."""
    from confluent_kafka import Producer

    producer = Producer(kafka_conf("producer"))
    producer.produce(TOPIC, key=person["login"]["uuid"], value=sealed(json.dumps(person)))
    assert producer.flush(30) == 0
    [row] = eventually(lambda: rows_of(cassandra, keys.pseudonym(person["email"])), 300, "the person's row")
    return row


@pytest.fixture(scope="module")
def access(stored, person, config) -> dict[str, Any]:
    result = bdf_gdpr("subject", "access", "--email", person["email"], config=config)
    assert result.returncode == 0, result.stderr
    assert person["email"] not in result.stderr
    return json.loads(result.stdout)


def sample_of_others(cassandra, exclude: uuid.UUID) -> list[dict[str, Any]]:
    rows = cassandra.execute("SELECT * FROM profiles LIMIT %s", (SAMPLE_SIZE + 1,))
    return [row for row in rows if row["user_id"] != exclude][:SAMPLE_SIZE]


@pytest.fixture(scope="module")
def erasure(access, stored, person, config, cassandra, keys, tmp_path_factory) -> dict[str, Any]:
    """Erase the person with --purge (nodetool on every Cassandra node), recording what was
    there before (on the first node: each holds a replica)."""
    folder = tmp_path_factory.mktemp("gdpr-erasure")
    pseudonym = keys.pseudonym(person["email"])
    ciphertext = bytes(stored["email_enc"])[3:]  # IV | ciphertext | tag: random, unique to this row
    others = sample_of_others(cassandra, stored["user_id"])
    flush()
    markers = [pseudonym.encode(), ciphertext.hex().encode()]
    before = scan(CASSANDRA_HOST, markers, ["-"], feed=sstable_dump_feed())

    # nodetool acts on one node: the purge runs it on each in turn, stopping at a failure.
    nodetool = folder / "nodetool"
    nodetool.write_text(
        "#!/bin/sh\nset -e\n"
        + "".join(f'bash {REPO}/lab/lab.sh ssh {host} "{NODETOOL} $*"\n' for host in CASSANDRA_HOSTS)
    )
    nodetool.chmod(0o700)
    audit_log = ERASURE_LOG
    args = ["subject", "erase", "--email", person["email"], "--yes", "--purge", "--nodetool", str(nodetool)]
    result = bdf_gdpr(*args, "--audit-log", str(audit_log), config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    return {
        "summary": json.loads(result.stdout),
        "stderr": result.stderr,
        "audit_log": audit_log,
        "pseudonym": pseudonym,
        "markers": markers,
        "ciphertext": ciphertext,
        "before": before,
        "others": others,
    }


def plaintexts(row: dict[str, Any], keys: KeyRing) -> list[str]:
    """The person's email, phone, cell, names and street name, as they would leak."""
    full_name = keys.decrypt(row["full_name_enc"], "full_name_enc")
    street = keys.decrypt(row["address_enc"], "address_enc").split(", ")[0]
    values = [
        keys.decrypt(row["email_enc"], "email_enc"),
        keys.decrypt(row["phone_enc"], "phone_enc"),
        keys.decrypt(row["cell_enc"], "cell_enc"),
        full_name,
        full_name.split(" ", 1)[1],  # without the title
        street.split(" ", 1)[1] if " " in street else street,  # without the number
    ]
    return [value for value in values if len(value) >= 6]


@pytest.fixture(scope="module")
def sample_plaintexts(cassandra, keys) -> list[bytes]:
    """Emails, phones, names and street names of a sample of the people the lab stores."""
    rows = cassandra.execute("SELECT * FROM profiles LIMIT %s", (SAMPLE_SIZE,))
    texts = {text for row in rows for text in plaintexts(row, keys)}
    assert len(texts) > SAMPLE_SIZE, "too few stored people to sample: is the pipeline running?"
    return sorted(text.encode() for text in texts)


# --- access ----------------------------------------------------------------------------------------


def test_published_person_is_stored_encrypted_and_found_by_the_keyed_pseudonym(stored, person, keys):
    assert str(stored["user_id"]) == person["login"]["uuid"]
    assert stored["email_pseudonym"] == keys.pseudonym(person["email"])
    assert person["email"].encode() not in bytes(stored["email_enc"])
    assert keys.decrypt(stored["email_enc"], "email_enc") == person["email"]


def test_access_exports_exactly_the_persons_stored_data_decrypted(access, person, keys):
    [profile] = access["profiles"]
    name, location = person["name"], person["location"]
    street = location["street"]
    assert profile["full_name"] == f"{name['title']} {name['first']} {name['last']}"
    assert profile["address"] == (
        f"{street['number']} {street['name']}, {location['city']}, {location['state']}, "
        f"{location['postcode']}, {location['country']}"
    )
    assert (profile["email"], profile["phone"], profile["cell"]) == (
        person["email"],
        person["phone"],
        person["cell"],
    )
    assert profile["user_id"] == person["login"]["uuid"]
    assert profile["email_pseudonym"] == access["email_pseudonym"] == keys.pseudonym(person["email"])
    assert profile["email_domain"] == "gdpr-lab.example.test"
    assert (profile["nationality"], profile["gender"], profile["country"]) == (
        person["nat"],
        person["gender"],
        location["country"],
    )
    assert profile["birth_date"] == person["dob"]["date"][:10]
    assert profile["registered_at"] == person["registered"]["date"]
    assert profile["key_id"] == keys.active_key_id
    assert "not_decryptable" not in profile
    stored_columns = {"user_id", "nationality", "gender", "country", "email_pseudonym", "email_domain"}
    stored_columns |= {f"{p}_{part}" for p in ("birth", "registered") for part in ("year", "month", "day")}
    stored_columns |= {"birth_date", "registered_at", "key_id", "produced_at", "stored_at", "expires_at"}
    decrypted = {"full_name", "address", "email", "phone", "cell"}
    assert set(profile) == stored_columns | decrypted


def test_stored_profile_expires_after_the_registered_time_limit(access):
    [profile] = access["profiles"]
    limit = load_register().retention_by_id()["profile_store"].seconds
    expires = dt.datetime.fromisoformat(profile["expires_at"].replace("Z", "+00:00"))
    assert abs((expires - dt.datetime.now(dt.UTC)).total_seconds() - limit) < 3600


def test_lab_retention_settings_are_the_registers(cassandra):
    from confluent_kafka.admin import AdminClient, ConfigResource

    limits = load_register().retention_by_id()
    table = cassandra.execute(
        "SELECT default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
        (KEYSPACE, TABLE),
    ).one()
    assert table["default_time_to_live"] == limits["profile_store"].value
    admin = AdminClient(kafka_conf("admin"))
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in (TOPIC, DLQ)]
    configs = {
        resource.name: future.result(30) for resource, future in admin.describe_configs(resources).items()
    }
    assert int(configs[TOPIC]["retention.ms"].value) == limits["kafka_topic"].value
    assert int(configs[DLQ]["retention.ms"].value) == limits["kafka_dead_letter_topic"].value


# --- erasure ---------------------------------------------------------------------------------------


def test_erasure_deletes_the_persons_row_and_access_then_finds_nothing(erasure, cassandra, person, config):
    summary = erasure["summary"]
    assert (summary["rows_found"], summary["rows_deleted"], summary["rows_remaining"]) == (1, 1, 0)
    assert rows_of(cassandra, erasure["pseudonym"]) == []
    assert (
        cassandra.execute(
            "SELECT * FROM profiles WHERE user_id = %s", (uuid.UUID(person["login"]["uuid"]),)
        ).one()
        is None
    )
    result = bdf_gdpr("subject", "access", "--email", person["email"], config=config)
    assert result.returncode == 0 and json.loads(result.stdout)["profiles"] == []


def test_erasure_leaves_every_other_person_as_they_were(erasure, cassandra):
    for before in erasure["others"]:
        after = cassandra.execute("SELECT * FROM profiles WHERE user_id = %s", (before["user_id"],)).one()
        assert after is not None, f"{before['user_id']} disappeared"
        assert after["email_enc"] == before["email_enc"] and after["full_name_enc"] == before["full_name_enc"]


def test_after_purge_the_persons_values_are_gone_from_cassandras_data_files(erasure):
    pseudonym, ciphertext = erasure["markers"]
    # Control: before the erasure the (decompressed) SSTables held both, so the scan can see them.
    assert set(erasure["before"]) == {pseudonym, ciphertext}
    assert erasure["summary"]["purge"] == {
        "flushed": True,
        "garbage_collected": True,
        "snapshots_holding_the_table": [],
    }
    raw = [erasure["ciphertext"], erasure["pseudonym"].encode()]
    for host in CASSANDRA_HOSTS:
        assert scan(host, erasure["markers"], ["-"], feed=sstable_dump_feed()) == {}, host
        on_disk = scan(host, raw, [f"{CASSANDRA_DATA}/{TABLE}-*"])
        assert on_disk == {}, f"still in the table's files on {host}: {on_disk}"


def test_erasure_shows_the_aggregates_hold_nothing_to_erase(erasure):
    aggregates = erasure["summary"]["aggregates"]
    assert aggregates["checked"] is True and aggregates["documents_scanned"] > 0
    assert aggregates["documents_naming_the_subject"] == 0
    assert aggregates["personal_data_to_erase"] is False


def test_erasure_log_holds_the_pseudonym_and_counts_never_the_email(erasure, person):
    entry = json.loads(erasure["audit_log"].read_text().splitlines()[-1])  # the log is the deployment's
    assert entry["action"] == "erasure" and entry["email_pseudonym"] == erasure["pseudonym"]
    assert entry["rows_deleted"] == 1 and entry["purged"] is True
    local_part = person["email"].split("@")[0]
    for text in (erasure["audit_log"].read_text(), erasure["stderr"]):
        assert local_part not in text and person["email"] not in text


def test_erasure_lists_the_copies_that_remain_and_until_when(erasure):
    remaining = {copy["copy"]: copy["until"] for copy in erasure["summary"]["remaining_copies"]}
    assert remaining["Raw message in the Kafka topic user_profiles"] == "7 days"


# --- no plain personal data where the register says there is none -------------------------------


def test_no_plain_personal_data_in_cassandras_files(sample_plaintexts):
    """Data files (raw and decompressed), commit log, hints, caches: the whole node's state."""
    flush()
    for host in CASSANDRA_HOSTS:
        assert scan(host, sample_plaintexts, [CASSANDRA_ROOT]) == {}, host
        assert scan(host, sample_plaintexts, ["-"], feed=sstable_dump_feed()) == {}, host


def test_no_personal_data_in_mongodb(sample_plaintexts, mongo):
    needles = [text.decode().lower() for text in sample_plaintexts]
    for name in mongo.list_collection_names():
        for document in mongo[name].find():
            text = json.dumps(document, default=str, ensure_ascii=False).lower()
            leaked = [needle for needle in needles if needle in text]
            assert not leaked, f"{name}/{document['_id']} holds personal data"


@pytest.mark.parametrize(
    ("hosts", "feed", "roots"),
    [
        ([STREAM_HOST], "journalctl -u user-profiles-stream -o cat --no-pager", ["-"]),
        (SPARK_WORKER_HOSTS, "", ["/var/lib/spark/work", "/var/log/spark"]),
        ([STREAM_HOST], "", ["/var/lib/spark/checkpoints"]),
        ([PRODUCER_HOST], "journalctl -u bdf-producer -o cat --no-pager", ["-"]),
    ],
    ids=["stream-job-journal", "spark-executor-logs", "stream-checkpoint", "producer-journal"],
)
def test_no_personal_data_in_the_logs_or_the_checkpoint(sample_plaintexts, hosts, feed, roots):
    for host in hosts:
        assert scan(host, sample_plaintexts, roots, feed=feed) == {}, host


def test_the_checkpoint_holds_no_user_id(cassandra):
    """The aggregates' ledger keeps digests of the user ids it counted, not the ids."""
    rows = cassandra.execute("SELECT user_id FROM profiles LIMIT %s", (SAMPLE_SIZE,))
    user_ids = [str(row["user_id"]).encode() for row in rows]
    assert len(user_ids) == SAMPLE_SIZE
    assert scan(STREAM_HOST, user_ids, ["/var/lib/spark/checkpoints"]) == {}


# --- security measures the register claims ---------------------------------------------------------


def test_key_file_on_the_stream_host_is_private_to_the_job():
    result = ssh(STREAM_HOST, "stat -c '%a %U' /etc/bigdataflow/secrets/profile-keys.json")
    assert result.stdout.split() == ["600", "spark"]


def test_cassandra_and_mongodb_refuse_clients_without_credentials():
    from cassandra.cluster import NoHostAvailable
    from pymongo.errors import OperationFailure

    cluster = clients.cassandra_cluster(cassandra_connection(), None, connect_timeout=10)
    try:
        with pytest.raises(NoHostAvailable, match=r"requires authentication|Authentication"):
            cluster.connect()
    finally:
        cluster.shutdown()
    client = clients.mongo_client(mongo_connection(), None, serverSelectionTimeoutMS=10_000)
    try:
        with pytest.raises(OperationFailure):
            client["user_profiles"].list_collection_names()
    finally:
        client.close()
