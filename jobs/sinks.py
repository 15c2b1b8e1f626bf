"""Where the stream job writes: small interfaces, one implementation per server.

Every write is an idempotent upsert, so replaying a micro-batch (``foreachBatch`` is
at-least-once) leaves the same state: Cassandra rows are keyed by user id, aggregate
documents by their key with absolute values, batch records by batch id.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import DataFrame

from bdf import clients
from bdf.config import CassandraSettings, KafkaSettings, MongoSettings, load_credentials
from jobs.aggregates import BATCHES_COLLECTION, to_documents

log = logging.getLogger("bigdataflow.stream")


class ProfileStore(Protocol):
    def write(self, profiles: DataFrame) -> None: ...


class DeadLetterSink(Protocol):
    def write(self, rejected: DataFrame) -> None: ...


class AggregateInputSink(Protocol):
    def write(self, batch_id: int, lines: str) -> None: ...


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
    from the aggregate query alone (its micro-batches run one after another); the profile
    query only replaces its batch records, one document at a time, without waiting for
    them. FerretDB v1 (PostgreSQL backend) holds one pool connection per replaced
    document until its bulk write ends: a bulk larger than its pool (50) wedged it for
    good in the lab, as did any unordered bulk write.
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


class AggregateInputSpool:
    """The aggregate query's input: one JSON-lines file per profile micro-batch.

    Written by the driver, read (then deleted) by the aggregate query's file source. A
    file appears whole (written under a hidden name, then renamed) and a replayed batch
    rewrites the same name. Owner-only: the lines hold user ids and birth dates.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, batch_id: int, lines: str) -> None:
        if not lines:
            return
        name = f"batch-{batch_id:012d}.json"
        hidden = self.folder / f".{name}.tmp"  # the file source skips names starting with "."
        with os.fdopen(os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(lines + "\n")
        hidden.replace(self.folder / name)


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
