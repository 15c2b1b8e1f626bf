"""The user-profile stream job: Kafka ``user_profiles`` -> Cassandra rows + MongoDB aggregates.

Two streaming queries share one Kafka source definition:

* ``profiles`` (every ``trigger_interval``): each message is parsed and transformed
  (``jobs.transform.prepare``, planned once); bad messages go to the dead-letter topic
  with their reason, good ones are encrypted and upserted into Cassandra by user id.
* ``aggregates`` (every ``aggregate_trigger_interval``): profiles deduplicated by user
  id in Spark's state store, then counted; every changed count is written to MongoDB
  as an absolute value.

Both are idempotent under replay (see ``jobs.sinks``); the checkpoint holds Kafka
offsets and the dedup/count state, so a restart resumes without double counting.

Run with ``spark-submit jobs/stream.py --config /etc/bigdataflow/bigdataflow.toml``
(the ``stream_job`` role's systemd unit does exactly that).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import time
from pathlib import Path

import click
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from jobs.cli_options import config_option, verbose_option
from jobs.config import ConfigError, Settings, load_settings
from jobs.keyring import KeyRing, load_keyring
from jobs.logs import setup_logging
from jobs.sinks import (
    AggregateStore,
    CassandraProfileStore,
    DeadLetterSink,
    KafkaDeadLetterSink,
    MongoAggregateStore,
    ProfileStore,
    cassandra_spark_conf,
    kafka_client_options,
)
from jobs.transform import (
    aggregate,
    aggregate_facts,
    normalize,
    parse_messages,
    prepare,
    rejected_messages,
    stored_rows,
    valid_profiles,
)

log = logging.getLogger("bigdataflow.stream")

# Spark shows options and plan literals in its UI and logs: hide credentials and keys.
REDACTED_OPTIONS = r"(?i)secret|password|token|access[.]key|jaas"
REDACTED_PLAN_STRINGS = r"(?i)[0-9a-f]{64,}|X'[0-9A-F]{32,}'"
FETCH_MAX_WAIT_MS = 20
SCHEDULER_POOLS = Path(__file__).with_name("scheduler-pools.xml")
# Aggregate micro-batches are split into this many tasks per core: short tasks, so a
# profile task waits little for a core (the scheduler does not preempt).
AGGREGATE_TASKS_PER_CORE = 8


def build_spark(settings: Settings) -> SparkSession:
    builder = SparkSession.builder.appName("user-profiles-stream")
    if not SparkSession.getActiveSession() and "spark.master" not in builder._options:
        builder = builder.config("spark.master", settings.stream.spark_master)  # spark-submit --master wins
    conf = {
        "spark.sql.session.timeZone": "UTC",  # dates are stored as UTC calendar dates
        "spark.redaction.regex": REDACTED_OPTIONS,
        "spark.sql.redaction.string.regex": REDACTED_PLAN_STRINGS,
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.sql.shuffle.partitions": str(settings.stream.parallelism),
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(SCHEDULER_POOLS),
        **cassandra_spark_conf(settings.cassandra),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class ProfileBatchWriter:
    """``foreachBatch`` handler of the ``profiles`` query (its input: ``jobs.transform.prepare``)."""

    def __init__(self, profiles: ProfileStore, dead_letters: DeadLetterSink, batches: AggregateStore) -> None:
        self._profiles = profiles
        self._dead_letters = dead_letters
        self._batches = batches

    def __call__(self, prepared: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        # The counts ride along the Cassandra write instead of costing a Spark job of their
        # own. Nothing is cached: the rare batch with dead letters reads Kafka again.
        observation = Observation(f"profiles-{batch_id}")
        counted = prepared.observe(
            observation, F.count(F.lit(1)).alias("received"), F.count("rejection").alias("dead_lettered")
        )
        self._profiles.write(stored_rows(counted))
        received, dead_lettered = observation.get["received"], observation.get["dead_lettered"]
        if dead_lettered:
            self._dead_letters.write(rejected_messages(prepared))
        counts = {"received": received, "stored": received - dead_lettered, "dead_lettered": dead_lettered}
        self._batches.record_batch("profiles", batch_id, counts, dt.datetime.now(dt.UTC))
        log.info(
            "profiles batch written",
            extra={
                "fields": {"batch_id": batch_id, **counts, "seconds": round(time.monotonic() - started, 3)}
            },
        )


class AggregateBatchWriter:
    """``foreachBatch`` handler of the ``aggregates`` query: changed counts, absolute values."""

    def __init__(self, store: AggregateStore) -> None:
        self._store = store

    def __call__(self, changed: DataFrame, batch_id: int) -> None:
        rows = [row.asDict() for row in changed.collect()]  # one row per changed key: small
        now = dt.datetime.now(dt.UTC)
        if rows:
            self._store.upsert(rows, now)
        self._store.record_batch("aggregates", batch_id, {"keys_updated": len(rows)}, now)
        log.info(
            "aggregates batch written", extra={"fields": {"batch_id": batch_id, "keys_updated": len(rows)}}
        )


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


def aggregate_stream(messages: DataFrame, max_message_bytes: int) -> DataFrame:
    """Counts per (collection, key) over distinct user ids; only non-personal columns kept."""
    distinct_users = (
        normalize(valid_profiles(parse_messages(messages, max_message_bytes)))
        .select("user_id", "nationality", "gender", "email_domain", "birth_date", "registered_at")
        .dropDuplicates(["user_id"])
    )
    return aggregate(aggregate_facts(distinct_users))


def read_kafka(spark: SparkSession, settings: Settings, min_partitions: int | None = None) -> DataFrame:
    """The topic as a stream; ``min_partitions`` splits a micro-batch into at least that many tasks."""
    kafka, stream = settings.kafka, settings.stream
    reader = (
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
    )
    if min_partitions:
        reader = reader.option("minPartitions", min_partitions)
    return reader.load()


def start_queries(
    spark: SparkSession,
    settings: Settings,
    keys: KeyRing,
    profile_writer: ProfileBatchWriter,
    aggregate_writer: AggregateBatchWriter,
) -> list[StreamingQuery]:
    """Profiles every ``trigger_interval``, first in line for the cores: they carry the
    latency. Aggregates less often, in the cores' spare time (``scheduler-pools.xml``)."""
    stream = settings.stream
    checkpoint = stream.checkpoint_location.rstrip("/")
    # A streaming query's jobs run in the pool set on the thread that starts it.
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", "profiles")
    # One task per core, not per topic partition: a task costs scheduling and a consumer
    # round trip whatever its size.
    messages = read_kafka(spark, settings).coalesce(stream.parallelism)
    profiles = (
        prepare(messages, keys, stream.max_message_bytes)
        .writeStream.queryName("profiles")
        .foreachBatch(profile_writer)
        .option("checkpointLocation", f"{checkpoint}/profiles")
        .trigger(processingTime=stream.trigger_interval)
        .start()
    )
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", "aggregates")
    messages = read_kafka(spark, settings, min_partitions=stream.parallelism * AGGREGATE_TASKS_PER_CORE)
    aggregates = (
        aggregate_stream(messages, stream.max_message_bytes)
        .writeStream.queryName("aggregates")
        .outputMode("update")
        .foreachBatch(aggregate_writer)
        .option("checkpointLocation", f"{checkpoint}/aggregates")
        .trigger(processingTime=stream.aggregate_trigger_interval)
        .start()
    )
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)
    return [profiles, aggregates]


def _stop_on_sigterm(spark: SparkSession, queries: list[StreamingQuery]) -> None:
    """systemd stops the unit with SIGTERM: finish cleanly so the checkpoint stays consistent."""

    def stop(signum: int, _frame: object) -> None:
        log.info("stopping on signal", extra={"fields": {"signal": signum}})
        for query in queries:
            query.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run(settings: Settings) -> None:
    settings.require("kafka", "cassandra", "mongodb", "keys", "stream")
    keys = load_keyring(settings.keys.key_file)
    store = MongoAggregateStore(settings.mongodb)
    spark = build_spark(settings)
    spark.sparkContext.setLogLevel("WARN")
    spark.streams.addListener(ProgressLog())
    profile_writer = ProfileBatchWriter(
        CassandraProfileStore(settings.cassandra), KafkaDeadLetterSink(settings.kafka), store
    )
    queries = start_queries(spark, settings, keys, profile_writer, AggregateBatchWriter(store))
    _stop_on_sigterm(spark, queries)
    log.info(
        "stream job started",
        extra={"fields": {"topic": settings.kafka.topic, "active_key_id": keys.active_key_id}},
    )
    spark.streams.awaitAnyTermination()
    failed = [query for query in queries if query.exception() is not None]
    for query in failed:
        log.error("query failed", extra={"fields": {"query": query.name, "error": str(query.exception())}})
    if failed:
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
    except ConfigError as exc:
        log.error("configuration error", extra={"fields": {"error": str(exc)}})
        sys.exit(2)


if __name__ == "__main__":
    main()
