"""The user-profile stream job: Kafka ``user_profiles`` -> Cassandra rows + MongoDB aggregates.

One streaming query, ``profiles`` (every ``trigger_interval``): each message is parsed
and transformed once (``jobs.transform.prepare``, planned once); bad messages go to the
dead-letter topic with their reason, good ones are encrypted and upserted into Cassandra
by user id. What each stored row counts under in the aggregates (no contact data) rides
along the write and is applied, on the driver, to the aggregates' ledger
(``jobs.sinks.AggregateLedger``: each user counted once). A thread writes the changed
counts to MongoDB as absolute values every ``aggregate_write_seconds``.

Everything is idempotent under replay (see ``jobs.sinks``); the checkpoint holds the Kafka
offsets, the ledger and the batch records on their way, all read by the driver alone.

Run with ``spark-submit jobs/stream.py --config /etc/bigdataflow/bigdataflow.toml``
(the ``stream_job`` role's systemd unit does exactly that).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import click
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from bdf.config import ConfigError, Settings, StreamSettings, load_settings
from bdf.keyring import KeyRing, load_keyring
from bdf.logs import setup_logging
from jobs.cli_options import config_option, verbose_option
from jobs.quarantine import QuarantinedMessage, QuarantineError, load_quarantine
from jobs.resilience import (
    WRITE_WATCHDOG,
    Stopping,
    is_unavailable,
    refused_rows,
    retry_while_unavailable,
)
from jobs.sinks import (
    AggregateInput,
    AggregateLedger,
    AggregateStore,
    BatchRecorder,
    BatchRecordOutbox,
    CassandraProfileStore,
    DeadLetterSink,
    KafkaDeadLetterSink,
    MongoAggregateStore,
    ProfileStore,
    cassandra_spark_conf,
    kafka_client_options,
)
from jobs.transform import (
    aggregate_fact_lines,
    prepare,
    rejected_messages,
    stored_rows,
    valid_profiles,
    with_rejections,
)

log = logging.getLogger("bigdataflow.stream")

# Spark shows options and plan literals in its UI and logs: hide credentials and keys.
REDACTED_OPTIONS = r"(?i)secret|password|token|access[.]key|jaas"
REDACTED_PLAN_STRINGS = r"(?i)[0-9a-f]{64,}|X'[0-9A-F]{32,}'"
FETCH_MAX_WAIT_MS = 20
# Below the checkpoint location: the aggregates' ledger.
AGGREGATE_LEDGER = "aggregate-ledger/ledger.sqlite"
# Below the checkpoint location: batch records on their way to MongoDB.
BATCH_RECORDS_FOLDER = "batch-records"


def build_spark(settings: Settings) -> SparkSession:
    builder = SparkSession.builder.appName("user-profiles-stream")
    if not SparkSession.getActiveSession() and "spark.master" not in builder._options:
        builder = builder.config("spark.master", settings.stream.spark_master)  # spark-submit --master wins
    conf = {
        "spark.sql.session.timeZone": "UTC",  # dates are stored as UTC calendar dates
        "spark.redaction.regex": REDACTED_OPTIONS,
        "spark.sql.redaction.string.regex": REDACTED_PLAN_STRINGS,
        "spark.sql.shuffle.partitions": str(settings.stream.parallelism),
        # Hadoop's FileContext forks `readlink`/`chmod` for every checkpoint file it renames
        # (no native library here): tens of ms each, several per micro-batch and query.
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager"
        ),
        **cassandra_spark_conf(settings.cassandra),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class ProfileBatchWriter:
    """``foreachBatch`` handler of the ``profiles`` query (its input: ``jobs.transform.prepare``).

    No message fails a batch: rows Cassandra refuses are found (``jobs.resilience``) and
    dead-lettered with its reason; while Cassandra does not answer, the batch waits and
    retries. The aggregates' ledger is local and batch records go through an outbox, so a
    MongoDB outage does not stop this query.
    """

    def __init__(
        self,
        profiles: ProfileStore,
        dead_letters: DeadLetterSink,
        aggregate_input: AggregateInput,
        batches: BatchRecorder,
        stopping: threading.Event | None = None,
    ) -> None:
        self._profiles = profiles
        self._dead_letters = dead_letters
        self._aggregate_input = aggregate_input
        self._batches = batches
        self._stopping = stopping or threading.Event()

    def __call__(self, prepared: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        try:
            counts = self._write(prepared, batch_id)
        except Exception as error:
            if is_unavailable(error) or isinstance(error, Stopping):
                raise
            counts = self._write_without_refused_rows(prepared, batch_id, error)
        log.info(
            "profiles batch written",
            extra={
                "fields": {"batch_id": batch_id, **counts, "seconds": round(time.monotonic() - started, 3)}
            },
        )

    def _write(self, prepared: DataFrame, batch_id: int) -> dict[str, int]:
        # The counts and the aggregate facts ride along the Cassandra write instead of
        # costing Spark jobs of their own. Nothing is cached: the rare batch with dead
        # letters reads Kafka again.
        attempts = itertools.count(1)

        def write_observed() -> dict:
            # A new observation per attempt: a failed write fills its observation too
            # (with what the failed tasks counted, usually nothing).
            observation = Observation(f"profiles-{batch_id}-{next(attempts)}")
            counted = prepared.observe(
                observation,
                F.count(F.lit(1)).alias("received"),
                F.count("rejection").alias("dead_lettered"),
                aggregate_fact_lines().alias("aggregate_facts"),
            )
            self._profiles.write(stored_rows(counted))
            return observation.get

        observed = retry_while_unavailable(write_observed, "cassandra", self._stopping)
        received, dead_lettered = observed["received"], observed["dead_lettered"]
        if dead_lettered:
            self._dead_letters.write(rejected_messages(prepared))
        counted = self._aggregate_input.apply(observed["aggregate_facts"])
        counts = {
            "received": received,
            "stored": received - dead_lettered,
            "dead_lettered": dead_lettered,
            "newly_counted": counted,
        }
        self._batches.record_batch("profiles", batch_id, counts, dt.datetime.now(dt.UTC))
        return counts

    def _write_without_refused_rows(
        self, prepared: DataFrame, batch_id: int, error: Exception
    ) -> dict[str, int]:
        """After a failed write: find the rows Cassandra refuses, dead-letter them with its
        reason and write the rest; ``error`` is raised again when no single row is to blame."""
        prepared = prepared.persist()  # the search reads the batch many times
        try:
            origin = ["topic", "partition", "offset"]
            candidates = [tuple(row) for row in valid_profiles(prepared).select(*origin).collect()]

            def write(keys: Sequence[tuple]) -> None:
                chosen = F.broadcast(prepared.sparkSession.createDataFrame(list(keys), ORIGIN_SCHEMA))
                rows = stored_rows(prepared.join(chosen, origin, "left_semi"))
                retry_while_unavailable(lambda: self._profiles.write(rows), "cassandra", self._stopping)

            refused = refused_rows(write, candidates, "cassandra")
            # Every row refused alike (a changed table, a lost grant) is not the rows' fault.
            if not refused or len(refused) == len(candidates) > 1:
                log_failed_batch(prepared, batch_id)
                raise error
            log.warning(
                "rows refused by Cassandra become dead letters",
                extra={
                    "fields": {"batch_id": batch_id, "refused": len(refused), "offsets": sorted(refused)[:20]}
                },
            )
            rejections = prepared.sparkSession.createDataFrame(
                [(*key, reason) for key, reason in refused.items()], REJECTION_SCHEMA
            )
            try:
                return self._write(with_rejections(prepared, rejections), batch_id)
            except Exception:
                log_failed_batch(prepared, batch_id)
                raise
        finally:
            prepared.unpersist()


def spark_tasks_running(spark: SparkSession) -> bool:
    """Whether an executor runs a task of this application now (Spark's status tracker)."""
    tracker = spark.sparkContext.statusTracker()
    stages = (tracker.getStageInfo(stage_id) for stage_id in tracker.getActiveStageIds())
    return any(stage is not None and stage.numActiveTasks > 0 for stage in stages)


ORIGIN_SCHEMA = "topic string, partition int, offset long"
REJECTION_SCHEMA = f"{ORIGIN_SCHEMA}, reason string"


def log_failed_batch(prepared: DataFrame, batch_id: int) -> None:
    """The journal line an operator needs to get out of a crash loop: which offsets."""
    ranges = prepared.groupBy("topic", "partition").agg(
        F.min("offset").alias("first"), F.max("offset").alias("last")
    )
    log.error(
        "profiles batch failed; if it keeps failing, quarantine its bad message (bdf-dlq quarantine)",
        extra={"fields": {"batch_id": batch_id, "offsets": [row.asDict() for row in ranges.collect()]}},
    )


class AggregateWriter:
    """Writes the counts the ledger changed since its last write to MongoDB, from a thread
    of its own every ``interval`` seconds: the profile query never waits for MongoDB.

    The counts are absolute, so a write that comes late, or twice, is right. While MongoDB
    does not answer, the next round tries again with everything changed since the last
    write that succeeded; after a restart the first round writes every count once.
    """

    def __init__(self, ledger: AggregateLedger, store: AggregateStore, stopping: threading.Event) -> None:
        self._ledger = ledger
        self._store = store
        self._stopping = stopping
        self._written = 0  # the ledger version last written: none yet

    def write_changed(self) -> int:
        """Write what changed since the last write (raises when MongoDB fails); how many keys."""
        version, rows = self._ledger.changed_after(self._written)
        if rows:
            self._store.upsert(rows, dt.datetime.now(dt.UTC))
        self._written = version
        return len(rows)

    def start(self, interval: float) -> threading.Thread:
        """A thread writing every ``interval`` seconds, and once more when ``stopping`` is set."""

        def loop() -> None:
            failing = False
            while True:
                stopped = self._stopping.wait(interval)
                try:
                    updated = self.write_changed()
                    if failing:
                        log.info("aggregates written again", extra={"fields": {"store": "mongodb"}})
                    failing = False
                    if updated:
                        log.info("aggregates written", extra={"fields": {"keys_updated": updated}})
                except Exception as error:
                    if not failing:  # once per outage, not every round
                        log.warning(
                            "aggregates wait for MongoDB", extra={"fields": {"error": type(error).__name__}}
                        )
                    failing = True
                if stopped:
                    return

        thread = threading.Thread(target=loop, name="aggregate-writer", daemon=True)
        thread.start()
        return thread


class ProgressLog(StreamingQueryListener):
    """One log line per micro-batch and query: rows, rates and where the time went."""

    # camelCase: Spark's listener API.
    def onQueryStarted(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        fields = {
            "query": progress.name,
            "batch_id": progress.batchId,
            "rows": progress.numInputRows,
            "rows_per_second": round(progress.processedRowsPerSecond or 0.0, 1),
            "duration_ms": dict(progress.durationMs),
        }
        if progress.stateOperators:
            fields["state_rows"] = sum(op.numRowsTotal for op in progress.stateOperators)
            fields["state_commit_ms"] = sum(op.commitTimeMs for op in progress.stateOperators)
        log.info("micro-batch progress", extra={"fields": fields})

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass


def read_kafka(spark: SparkSession, settings: Settings) -> DataFrame:
    kafka, stream = settings.kafka, settings.stream
    return (
        spark.readStream.format("kafka")
        .options(**kafka_client_options(kafka))
        .option("subscribe", kafka.topic)
        .option("startingOffsets", stream.starting_offsets)
        .option("maxOffsetsPerTrigger", stream.max_offsets_per_trigger)
        .option("groupIdPrefix", kafka.consumer_group_prefix)  # what the consumer-group ACL allows
        # A cached consumer's prefetch waits this long on the broker for records that do
        # not exist yet, and the next micro-batch's read of that partition queued behind
        # it: 500 ms (Kafka's default) per task, most of a small batch's time.
        .option("kafka.fetch.max.wait.ms", str(FETCH_MAX_WAIT_MS))
        .load()
        # One task per core, not per topic partition: a task costs scheduling and a
        # consumer round trip whatever its size.
        .coalesce(stream.parallelism)
    )


def start_query(
    spark: SparkSession, settings: Settings, keys: KeyRing, profile_writer: ProfileBatchWriter
) -> StreamingQuery:
    stream = settings.stream
    prepared = prepare(read_kafka(spark, settings), keys, stream.max_message_bytes)
    return (
        without_quarantined(prepared, load_quarantine(stream.quarantine_file))
        .writeStream.queryName("profiles")
        .foreachBatch(profile_writer)
        .option("checkpointLocation", str(checkpoint_folder(stream, "profiles")))
        .trigger(processingTime=stream.trigger_interval)
        .start()
    )


def without_quarantined(prepared: DataFrame, quarantined: list[QuarantinedMessage]) -> DataFrame:
    """``prepared`` with the messages an operator quarantined (``bdf-dlq quarantine``)
    dead-lettered unprocessed, for the operator's reason: the way out of a crash loop."""
    if not quarantined:
        return prepared
    log.warning("quarantined messages are dead-lettered", extra={"fields": {"messages": len(quarantined)}})
    rejections = [(*message.position, f"quarantined: {message.reason}") for message in quarantined]
    return with_rejections(prepared, prepared.sparkSession.createDataFrame(rejections, REJECTION_SCHEMA))


def checkpoint_folder(stream: StreamSettings, name: str) -> Path:
    return Path(stream.checkpoint_location) / name


def open_ledger(stream: StreamSettings) -> AggregateLedger:
    """The aggregates' ledger below the checkpoint. A checkpoint whose query has committed
    batches but has no ledger (one of the job before the ledger, or a deleted ledger file)
    would count from zero over MongoDB's counts: refused (README, Known limits, recount)."""
    ledger = checkpoint_folder(stream, AGGREGATE_LEDGER)
    commits = checkpoint_folder(stream, "profiles") / "commits"
    if not ledger.exists() and commits.is_dir() and any(commits.iterdir()):
        raise ConfigError(
            f"stream.checkpoint_location {stream.checkpoint_location}: the profiles query has"
            f" committed batches but there is no aggregate ledger ({AGGREGATE_LEDGER}); the"
            " aggregates would count from zero. To recount, see README, Known limits (upgrading)."
        )
    return AggregateLedger(ledger)


def _stop_on_sigterm(query: StreamingQuery, stopping: threading.Event) -> None:
    """systemd stops the unit with SIGTERM: finish cleanly so the checkpoint stays consistent.

    ``stopping`` first: a batch waiting for a store gives up its wait, so ``stop`` returns.
    """

    def stop(signum: int, _frame: object) -> None:
        log.info("stopping on signal", extra={"fields": {"signal": signum}})
        stopping.set()
        query.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


# How long the job waits, when it stops, for the last aggregate write.
LAST_AGGREGATE_WRITE_SECONDS = 30


def run(settings: Settings) -> None:
    settings.require("kafka", "cassandra", "mongodb", "keys", "stream")
    stream = settings.stream
    keys = load_keyring(settings.keys.key_file)
    ledger = open_ledger(stream)
    store = MongoAggregateStore(settings.mongodb)
    spark = build_spark(settings)
    spark.sparkContext.setLogLevel("WARN")
    spark.streams.addListener(ProgressLog())
    stopping = threading.Event()
    WRITE_WATCHDOG.start(stream.stalled_write_seconds, lambda: spark_tasks_running(spark))
    outbox = BatchRecordOutbox(checkpoint_folder(stream, BATCH_RECORDS_FOLDER), store)
    outbox.start_delivery(stopping)
    aggregate_writes = AggregateWriter(ledger, store, stopping).start(stream.aggregate_write_seconds)
    profiles, dead_letters = CassandraProfileStore(settings.cassandra), KafkaDeadLetterSink(settings.kafka)
    profile_writer = ProfileBatchWriter(profiles, dead_letters, ledger, outbox, stopping)
    query = start_query(spark, settings, keys, profile_writer)
    _stop_on_sigterm(query, stopping)
    log.info(
        "stream job started",
        extra={
            "fields": {
                "topic": settings.kafka.topic,
                "active_key_id": keys.active_key_id,
                "active_message_key_id": keys.active_message_key_id,
            }
        },
    )
    with contextlib.suppress(StreamingQueryException):
        query.awaitTermination()  # its error, if any, is logged below
    stopping.set()
    aggregate_writes.join(LAST_AGGREGATE_WRITE_SECONDS)
    ledger.close()
    if query.exception() is not None:
        log.error("query failed", extra={"fields": {"query": query.name, "error": str(query.exception())}})
        raise SystemExit(1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@verbose_option
def main(config_path: Path | None, verbose: bool) -> None:
    """Run the GDPR transformation stream: Kafka -> Cassandra + MongoDB aggregates."""
    setup_logging(verbose)
    try:
        settings = load_settings(config_path)
        run(settings)
    except (ConfigError, QuarantineError) as exc:
        log.error("configuration error", extra={"fields": {"error": str(exc)}})
        sys.exit(2)


if __name__ == "__main__":
    main()
