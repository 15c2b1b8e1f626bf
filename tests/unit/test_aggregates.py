"""Aggregates equal an independent count, and replays or restarts never double count."""

from __future__ import annotations

import collections
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from jobs.aggregates import EPOCH, age_bands, age_on, average_age
from jobs.sinks import AggregateInputSpool
from jobs.stream import AggregateBatchWriter, ProfileBatchWriter, aggregate_stream
from jobs.transform import aggregate, aggregate_facts, prepare, stored_rows
from tests.factories import generated_profiles
from tests.messages import kafka_frame

MAX_BYTES = 65_536


class InMemoryAggregateStore:
    """Stands in for MongoDB in unit tests: the same replace-by-key semantics."""

    def __init__(self) -> None:
        self.collections: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
        self.batches: dict[str, dict[str, Any]] = {}

    def upsert(self, rows, updated_at):
        from jobs.aggregates import to_documents

        for name, documents in to_documents(rows, updated_at).items():
            for document in documents:
                self.collections[name][document["_id"]] = document

    def record_batch(self, query, batch_id, counts, at):
        self.batches[f"{query}:{batch_id}"] = dict(counts)

    def counts(self) -> dict[str, dict[str, tuple[int, int]]]:
        return {
            name: {key: (doc["users"], doc["birth_epoch_day_sum"]) for key, doc in docs.items()}
            for name, docs in self.collections.items()
        }


def independent_counts(profiles: list[Mapping[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    """The expected aggregates, computed in plain Python from the raw input."""
    distinct = {p["login"]["uuid"]: p for p in profiles}.values()
    counts: dict[str, dict[str, list[int]]] = collections.defaultdict(
        lambda: collections.defaultdict(lambda: [0, 0])
    )
    for p in distinct:
        birth = dt.date.fromisoformat(p["dob"]["date"][:10])
        email = p.get("email")
        keys = {
            "users_by_nationality": p["nat"],
            "users_by_gender": p["gender"],
            "users_by_nationality_gender": f"{p['nat']}|{p['gender']}",
            "email_domains": email.split("@")[1].lower() if email else "unknown",
            "users_by_birth_month": p["dob"]["date"][:7],
            "registrations_by_month": p["registered"]["date"][:7],
            "totals": "all",
        }
        for name, key in keys.items():
            counts[name][key][0] += 1
            counts[name][key][1] += (birth - EPOCH).days
    return {name: {key: tuple(v) for key, v in keys.items()} for name, keys in counts.items()}


@pytest.fixture(scope="module")
def sample():
    return generated_profiles(400, seed="aggregate-tests")


@pytest.mark.spark
def test_batch_aggregates_equal_an_independent_count(spark, keys, sample):
    valid = stored_rows(prepare(kafka_frame(spark, sample, keys), keys, MAX_BYTES))
    store = InMemoryAggregateStore()
    store.upsert(
        [row.asDict() for row in aggregate(aggregate_facts(valid)).collect()], dt.datetime.now(dt.UTC)
    )
    assert store.counts() == independent_counts(sample)


@pytest.mark.spark
def test_applying_the_same_aggregate_batch_twice_changes_nothing(spark, keys, sample):
    valid = stored_rows(prepare(kafka_frame(spark, sample, keys), keys, MAX_BYTES))
    changed = aggregate(aggregate_facts(valid))
    store = InMemoryAggregateStore()
    writer = AggregateBatchWriter(store)
    writer(changed, 0)
    once = store.counts()
    writer(changed, 0)
    assert store.counts() == once == independent_counts(sample)


class ListSink:
    def __init__(self) -> None:
        self.rows: dict[Any, Any] = {}

    def write(self, frame) -> None:
        for row in frame.collect():
            self.rows[row[0] if row[0] is not None else len(self.rows)] = row


@pytest.mark.spark
def test_stream_restart_and_resent_profiles_never_double_count(spark, keys, sample, tmp_path):
    """The profile query spools what it stored; two aggregate runs from one checkpoint,
    the second input re-sends half of the first."""
    spool = AggregateInputSpool(tmp_path / "spool")
    profile_writer = ProfileBatchWriter(ListSink(), ListSink(), spool, InMemoryAggregateStore())
    store = InMemoryAggregateStore()

    def run_once() -> None:
        query = (
            aggregate_stream(spark, spool.folder)
            .writeStream.outputMode("update")
            .foreachBatch(AggregateBatchWriter(store))
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()

    first, second = sample[:250], sample[125:]
    profile_writer(prepare(kafka_frame(spark, first, keys), keys, MAX_BYTES), 0)
    run_once()
    assert store.counts() == independent_counts(first)
    profile_writer(prepare(kafka_frame(spark, [*second, "not json"], keys), keys, MAX_BYTES), 1)
    run_once()
    assert store.counts() == independent_counts(sample)


@pytest.mark.spark
def test_profile_batch_replayed_upserts_the_same_rows_and_counts_dead_letters(spark, keys, sample, tmp_path):
    messages = kafka_frame(spark, [*sample[:20], "not json", {"nat": "FI"}], keys)
    profiles, dead, store = ListSink(), ListSink(), InMemoryAggregateStore()
    spool = AggregateInputSpool(tmp_path / "spool")
    writer = ProfileBatchWriter(profiles, dead, spool, store)
    prepared = prepare(messages, keys, MAX_BYTES)
    writer(prepared, 7)
    writer(prepared, 7)
    assert set(profiles.rows) == {p["login"]["uuid"] for p in sample[:20]}
    assert store.batches == {"profiles:7": {"received": 22, "stored": 20, "dead_lettered": 2}}
    (spooled,) = spool.folder.iterdir()
    assert spooled.name == "batch-000000000007.json" and spooled.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in spooled.read_text().splitlines()]
    assert {line["user_id"] for line in lines} == {p["login"]["uuid"] for p in sample[:20]}
    assert all(
        set(line) <= {"user_id", "nationality", "gender", "email_domain", "birth_date", "registered_at"}
        for line in lines
    )


class CassandraDownOnce(ListSink):
    """Fails its first write inside a Spark action, as the connector does when Cassandra is
    down (the action fails in the executors), then stores."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 1

    def write(self, frame) -> None:
        from pyspark.sql import functions as F

        if self.outages:
            self.outages -= 1
            refused = F.raise_error(F.lit("Connection refused (test: Cassandra is down)"))
            frame.select(refused).write.format("noop").mode("overwrite").save()
        super().write(frame)


@pytest.mark.spark
def test_a_batch_retried_after_a_cassandra_outage_counts_and_spools_every_row(spark, keys, sample, tmp_path):
    """The failed attempt's metrics (none) must not stand for the batch: the retried write
    is the one that counts and feeds the aggregates."""
    profiles, spool, store = (
        CassandraDownOnce(),
        AggregateInputSpool(tmp_path / "spool"),
        InMemoryAggregateStore(),
    )
    writer = ProfileBatchWriter(profiles, ListSink(), spool, store)
    writer(prepare(kafka_frame(spark, sample[:30], keys), keys, MAX_BYTES), 3)
    assert profiles.outages == 0 and len(profiles.rows) == 30
    assert store.batches == {"profiles:3": {"received": 30, "stored": 30, "dead_lettered": 0}}
    (spooled,) = spool.folder.iterdir()
    assert len(spooled.read_text().splitlines()) == 30


def test_average_age_is_derived_from_the_mean_birth_day():
    births = [dt.date(1990, 1, 1), dt.date(2000, 1, 1)]
    document = {"users": 2, "birth_epoch_day_sum": sum((b - EPOCH).days for b in births)}
    assert average_age(document, dt.date(2030, 1, 1)) == pytest.approx(35.0, abs=0.01)
    assert average_age({"users": 0, "birth_epoch_day_sum": 0}, dt.date(2030, 1, 1)) is None


def test_leap_day_birthday_ages_on_first_of_march():
    born = dt.date(1992, 2, 29)
    assert age_on(born, dt.date(2026, 2, 28)) == 33
    assert age_on(born, dt.date(2026, 3, 1)) == 34
    assert age_on(born, dt.date(2028, 2, 29)) == 36


def test_age_bands_place_birth_months_by_age_today():
    documents = [
        {"_id": "2010-06", "users": 3},
        {"_id": "2000-01", "users": 2},
        {"_id": "1950-12", "users": 1},
        {"_id": "unknown", "users": 9},
    ]
    bands = age_bands(documents, dt.date(2026, 11, 27))
    assert bands["0-17"] == 3 and bands["25-34"] == 2 and bands["65+"] == 1
    assert sum(bands.values()) == 6


def test_mongo_store_writes_ordered_chunks_smaller_than_ferretdbs_pool():
    """FerretDB v1 wedges on large or unordered bulk writes: the store never sends one."""
    from jobs.sinks import MongoAggregateStore

    class Collection:
        def __init__(self) -> None:
            self.bulks: list[tuple[int, bool]] = []

        def bulk_write(self, requests, ordered):
            self.bulks.append((len(requests), ordered))

    created: dict[str, Collection] = {}

    class Database(dict):
        def __missing__(self, name):
            self[name] = created[name] = Collection()
            return created[name]

    class Settings:
        database = "user_profiles"

    store = MongoAggregateStore(Settings(), client={"user_profiles": Database()})
    rows = [
        {"collection": "email_domains", "key": f"d{i}", "users": i, "birth_epoch_day_sum": i}
        for i in range(40)
    ]
    store.upsert(rows, dt.datetime.now(dt.UTC))
    assert created["email_domains"].bulks == [(16, True), (16, True), (8, True)]
