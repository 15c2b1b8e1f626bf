"""Where the stream job writes: small interfaces, one implementation per server.

Every write is an idempotent upsert, so replaying a micro-batch (``foreachBatch`` is
at-least-once) leaves the same state: Cassandra rows are keyed by user id, aggregate
documents by their key with absolute values, batch records by batch id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import DataFrame

from bdf import clients
from bdf.config import CassandraSettings, KafkaSettings, MongoSettings, load_credentials
from jobs.aggregates import AGGREGATE_COLLECTIONS, BATCHES_COLLECTION, TOTALS, to_documents

log = logging.getLogger("bigdataflow.stream")


class ProfileStore(Protocol):
    def write(self, profiles: DataFrame) -> None: ...


class DeadLetterSink(Protocol):
    def write(self, rejected: DataFrame) -> None: ...


class AggregateInput(Protocol):
    def apply(self, lines: str | None) -> int: ...


class AggregateStore(Protocol):
    def upsert(self, rows: list[Mapping[str, Any]], updated_at: dt.datetime) -> None: ...

    def record_batch(self, query: str, batch_id: int, counts: Mapping[str, int], at: dt.datetime) -> None: ...


def kafka_client_options(kafka: KafkaSettings) -> dict[str, str]:
    """Spark Kafka source/sink options as the job's principal (bdf.clients builds them)."""
    return clients.kafka_spark_options(kafka, load_credentials(kafka.credentials_file))


class KafkaDeadLetterSink:
    def __init__(self, kafka: KafkaSettings) -> None:
        self._options = kafka_client_options(kafka) | {"topic": kafka.dead_letter_topic}

    def write(self, rejected: DataFrame) -> None:
        rejected.write.format("kafka").options(**self._options).save()


CASSANDRA_WRITES_IN_FLIGHT = 64


def cassandra_spark_conf(cassandra: CassandraSettings) -> dict[str, str]:
    """Spark Cassandra Connector settings: bdf.clients' connection, then the job's tuning."""
    connection = clients.cassandra_spark_conf(cassandra, load_credentials(cassandra.credentials_file))
    return connection | {
        # Keep the session between micro-batches (default 3.5 s: shorter than a trigger,
        # so every batch paid for a new connection, login and schema fetch).
        "spark.cassandra.connection.keepAliveMS": "120000",
        # Every row is its own partition, so its own write: with the default 5 in flight
        # per task a 500-row task waited on 100 round trips.
        "spark.cassandra.output.concurrent.writes": str(CASSANDRA_WRITES_IN_FLIGHT),
    }


class CassandraProfileStore:
    """Upserts through the Spark Cassandra Connector (the JVM writes, in parallel)."""

    def __init__(self, cassandra: CassandraSettings) -> None:
        self._options = {"keyspace": cassandra.keyspace, "table": cassandra.table}

    def write(self, profiles: DataFrame) -> None:
        writer = profiles.write.format("org.apache.spark.sql.cassandra").options(**self._options)
        try:
            writer.mode("append").save()
        except Exception:
            self._forget_sessions(profiles.sparkSession)
            raise

    @staticmethod
    def _forget_sessions(spark) -> None:
        """Close the connector's idle driver sessions, so that a retry opens a new one.

        The Java driver's schema refresh can wait for ever on a session whose control
        connection was just lost (scylladb/java-driver#343): after Cassandra restarted, the
        retry's table lookup hung in ``Session.refreshSchema`` and the job stored nothing.
        """
        try:
            spark.sparkContext._jvm.com.datastax.spark.connector.cql.CassandraConnector.evictCache()
        except Exception as error:  # the write's own error matters more
            fields = {"error": str(error)[:200]}
            log.warning("could not close the Cassandra sessions", extra={"fields": fields})


STORE_CLIENT_OPTIONS = {
    "serverSelectionTimeoutMS": 10_000,
    # A server that stops answering fails the batch (the job restarts and replays)
    # instead of hanging the stream forever.
    "socketTimeoutMS": 60_000,
    "tz_aware": True,
}


class MongoAggregateStore:
    """One collection per aggregate; documents replaced by key (absolute values).

    Aggregates are written in ordered bulk writes of at most ``WRITE_CHUNK`` documents,
    from the job's aggregate writer thread alone (one round after another); batch records
    are replaced one document at a time by the outbox's thread. FerretDB v1 (PostgreSQL
    backend) holds one pool connection per replaced document until its bulk write ends: a
    bulk larger than its pool (50) wedged it for good in the lab, as did any unordered
    bulk write.
    """

    WRITE_CHUNK = 16

    def __init__(self, mongodb: MongoSettings, client: Any = None) -> None:
        if client is None:
            credentials = load_credentials(mongodb.credentials_file)
            client = clients.mongo_client(mongodb, credentials, **STORE_CLIENT_OPTIONS)
        self._db = client[mongodb.database]

    def upsert(self, rows: list[Mapping[str, Any]], updated_at: dt.datetime) -> None:
        from pymongo import ReplaceOne

        for collection, documents in to_documents(rows, updated_at).items():
            writes = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in documents]
            for start in range(0, len(writes), self.WRITE_CHUNK):
                self._db[collection].bulk_write(writes[start : start + self.WRITE_CHUNK], ordered=True)

    def record_batch(self, query: str, batch_id: int, counts: Mapping[str, int], at: dt.datetime) -> None:
        self._db[BATCHES_COLLECTION].replace_one(
            {"_id": f"{query}:{batch_id}"},
            {"query": query, "batch_id": batch_id, "at": at, **counts},
            upsert=True,
        )


class AggregateLedger:
    """The aggregates' state: which users are counted, and the counts, in one SQLite file.

    The profile query applies each stored batch's facts here, on the driver, in one
    transaction: nothing of it lives in Spark's state, so no executor needs the driver's
    disk. A user is counted once, whatever replays or resends bring. Every apply that
    changes counts gets the next version; ``changed_after`` gives the writer to MongoDB the
    counts changed since the version it last wrote (absolute values).

    The file holds a digest of each counted user id (not the id), owner-only (0600 in a
    0700 folder); WAL with full syncs, so an applied batch survives a power cut.
    """

    SCHEMA = """
        PRAGMA journal_mode = WAL;
        PRAGMA synchronous = FULL;
        CREATE TABLE IF NOT EXISTS counted_users (digest BLOB PRIMARY KEY) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS counts (
            collection TEXT NOT NULL, key TEXT NOT NULL,
            users INTEGER NOT NULL, birth_epoch_day_sum INTEGER NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (collection, key)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS counts_by_version ON counts (version);
    """
    ADD_COUNTS = """
        INSERT INTO counts VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (collection, key) DO UPDATE SET
            users = users + excluded.users,
            birth_epoch_day_sum = birth_epoch_day_sum + excluded.birth_epoch_day_sum,
            version = excluded.version
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self._lock = threading.Lock()  # the profile query's thread applies, the writer reads
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(self.SCHEMA)

    def apply(self, lines: str | None) -> int:
        """Count the users of ``lines`` (``jobs.transform.aggregate_fact_lines``; none for a
        batch that stored nothing) not counted yet; how many were new."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                increments = self._new_users(lines)
                version = self._version() + 1
                self._db.executemany(
                    self.ADD_COUNTS,
                    [(*key, users, days, version) for key, (users, days) in increments.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return increments.get((TOTALS, "all"), (0, 0))[0]

    def _new_users(self, lines: str | None) -> dict[tuple[str, str], list[int]]:
        """(collection, key) -> [users, birth days] of the users not counted before."""
        increments: dict[tuple[str, str], list[int]] = {}
        for line in (lines or "").splitlines():
            fact = json.loads(line)
            digest = hashlib.blake2b(fact["user_id"].encode(), digest_size=16).digest()
            if not self._db.execute("INSERT OR IGNORE INTO counted_users VALUES (?)", (digest,)).rowcount:
                continue
            birth_day = fact.get("birth_epoch_day") or 0
            for collection, key in zip(AGGREGATE_COLLECTIONS, fact["keys"], strict=True):
                total = increments.setdefault((collection, key), [0, 0])
                total[0] += 1
                total[1] += birth_day
        return increments

    def _version(self) -> int:
        return self._db.execute("SELECT coalesce(max(version), 0) FROM counts").fetchone()[0]

    def changed_after(self, version: int) -> tuple[int, list[dict[str, Any]]]:
        """(the newest version, the counts changed after ``version``), read at once."""
        with self._lock:
            newest = self._version()
            rows = self._db.execute(
                "SELECT collection, key, users, birth_epoch_day_sum FROM counts WHERE version > ?", (version,)
            ).fetchall()
        fields = ("collection", "key", "users", "birth_epoch_day_sum")
        return newest, [dict(zip(fields, row, strict=True)) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class BatchRecorder(Protocol):
    def record_batch(self, query: str, batch_id: int, counts: Mapping[str, int], at: dt.datetime) -> None: ...


class BatchRecordOutbox:
    """Batch records written to a local folder first, delivered to MongoDB by a thread.

    A MongoDB outage must not stop profiles reaching Cassandra: a micro-batch only drops
    its record here (0600, written hidden then renamed), and ``deliver`` replaces the
    documents by id in MongoDB whenever it answers, oldest first, deleting what it
    delivered. Records wait across job restarts (the folder is below the checkpoint).
    """

    POLL_SECONDS = 2.0

    def __init__(self, folder: Path, store: BatchRecorder) -> None:
        self.folder = folder
        self._store = store
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def record_batch(self, query: str, batch_id: int, counts: Mapping[str, int], at: dt.datetime) -> None:
        record = {"query": query, "batch_id": batch_id, "counts": dict(counts), "at": at.isoformat()}
        name = f"{query}-{batch_id:012d}.json"
        hidden = self.folder / f".{name}.tmp"
        with os.fdopen(os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            json.dump(record, file)
        hidden.replace(self.folder / name)

    def pending(self) -> list[Path]:
        return sorted(path for path in self.folder.glob("*.json") if not path.name.startswith("."))

    def deliver(self) -> int:
        """Deliver every pending record (raises when the store fails); how many were delivered."""
        delivered = 0
        for path in self.pending():
            record = json.loads(path.read_text())
            self._store.record_batch(
                record["query"], record["batch_id"], record["counts"], dt.datetime.fromisoformat(record["at"])
            )
            path.unlink()
            delivered += 1
        return delivered

    def start_delivery(self, stopping: threading.Event) -> threading.Thread:
        """A daemon thread delivering until ``stopping`` is set; a failed delivery is retried."""

        def loop() -> None:
            failing = False
            while not stopping.wait(self.POLL_SECONDS):
                try:
                    self.deliver()
                    if failing:
                        log.info("batch records delivered again", extra={"fields": {"store": "mongodb"}})
                    failing = False
                except Exception as error:
                    if not failing:  # once per outage, not every poll
                        log.warning(
                            "batch records wait for MongoDB",
                            extra={"fields": {"pending": len(self.pending()), "error": type(error).__name__}},
                        )
                    failing = True

        thread = threading.Thread(target=loop, name="batch-record-outbox", daemon=True)
        thread.start()
        return thread
