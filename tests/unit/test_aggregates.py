"""Aggregates equal an independent count, and replays, resends or restarts never double count."""

from __future__ import annotations

import collections
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from jobs.aggregates import EPOCH, age_bands, age_on, average_age
from jobs.sinks import AggregateLedger
from jobs.stream import AggregateWriter, ProfileBatchWriter, open_ledger
from jobs.transform import prepare
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


class ListSink:
    def __init__(self) -> None:
        self.rows: dict[Any, Any] = {}

    def write(self, frame) -> None:
        for row in frame.collect():
            self.rows[row[0] if row[0] is not None else len(self.rows)] = row


def ledger_counts(ledger: AggregateLedger) -> dict[str, dict[str, tuple[int, int]]]:
    store = InMemoryAggregateStore()
    AggregateWriter(ledger, store, threading.Event()).write_changed()
    return store.counts()


@pytest.fixture
def ledger(tmp_path):
    ledger = AggregateLedger(tmp_path / "ledger" / "ledger.sqlite")
    yield ledger
    ledger.close()


@pytest.mark.spark
def test_batch_aggregates_equal_an_independent_count(spark, keys, sample, ledger):
    writer = ProfileBatchWriter(ListSink(), ListSink(), ledger, InMemoryAggregateStore())
    writer(prepare(kafka_frame(spark, sample, keys), keys, MAX_BYTES), 0)
    assert ledger_counts(ledger) == independent_counts(sample)


@pytest.mark.spark
def test_replays_resends_and_restarts_never_double_count(spark, keys, sample, tmp_path):
    """A replayed batch, a batch re-sending half of the one before, a restart between
    (the ledger reopened from its file): every user counted once."""
    path = tmp_path / "ledger" / "ledger.sqlite"
    first, second = sample[:250], sample[125:]
    ledger = AggregateLedger(path)
    writer = ProfileBatchWriter(ListSink(), ListSink(), ledger, InMemoryAggregateStore())
    prepared = prepare(kafka_frame(spark, first, keys), keys, MAX_BYTES)
    writer(prepared, 0)
    writer(prepared, 0)
    assert ledger_counts(ledger) == independent_counts(first)
    ledger.close()
    ledger = AggregateLedger(path)
    writer = ProfileBatchWriter(ListSink(), ListSink(), ledger, InMemoryAggregateStore())
    writer(prepare(kafka_frame(spark, [*second, "not json"], keys), keys, MAX_BYTES), 1)
    assert ledger_counts(ledger) == independent_counts(sample)
    ledger.close()


def fact_line(user_id: str, nationality: str, birth_epoch_day: int = 1000) -> str:
    keys = [nationality, "female", f"{nationality}|female", "example.org", "1972-09", "2010-01", "all"]
    return json.dumps({"user_id": user_id, "birth_epoch_day": birth_epoch_day, "keys": keys})


def test_the_writer_sends_only_the_counts_changed_since_its_last_write(ledger):
    store = InMemoryAggregateStore()
    writer = AggregateWriter(ledger, store, threading.Event())
    assert writer.write_changed() == 0 and store.collections == {}
    assert ledger.apply("\n".join([fact_line("u1", "FI"), fact_line("u2", "FR")])) == 2
    assert writer.write_changed() == 2 * 7 - 5  # gender, domain, both months and the total shared
    assert ledger.apply(fact_line("u3", "FI")) == 1
    changed = []
    store.upsert = lambda rows, at: changed.extend(rows)
    assert writer.write_changed() == 7
    assert {(row["collection"], row["key"], row["users"]) for row in changed} >= {
        ("users_by_nationality", "FI", 2),
        ("totals", "all", 3),
    }
    assert writer.write_changed() == 0, "nothing changed since"


def test_a_failed_write_is_retried_with_everything_changed_since_the_last_good_one(ledger):
    class Unreachable(InMemoryAggregateStore):
        down = True

        def upsert(self, rows, updated_at):
            if self.down:
                raise ConnectionError("MongoDB is down (test)")
            super().upsert(rows, updated_at)

    store = Unreachable()
    writer = AggregateWriter(ledger, store, threading.Event())
    ledger.apply(fact_line("u1", "FI"))
    with pytest.raises(ConnectionError):
        writer.write_changed()
    ledger.apply(fact_line("u2", "FR"))
    store.down = False
    writer.write_changed()
    assert store.counts()["totals"] == {"all": (2, 2000)}
    assert store.counts()["users_by_nationality"] == {"FI": (1, 1000), "FR": (1, 1000)}


def test_the_writer_thread_writes_once_more_when_the_job_stops(ledger):
    store, stopping = InMemoryAggregateStore(), threading.Event()
    thread = AggregateWriter(ledger, store, stopping).start(interval=3600)
    ledger.apply(fact_line("u1", "FI"))
    stopping.set()
    thread.join(10)
    assert not thread.is_alive() and store.counts()["totals"] == {"all": (1, 1000)}


def test_the_ledger_is_owner_only_and_holds_no_user_id(ledger):
    ledger.apply(fact_line("4a1f-test-user", "FI"))
    assert ledger.path.stat().st_mode & 0o777 == 0o600
    assert ledger.path.parent.stat().st_mode & 0o777 == 0o700
    ledger.close()
    for path in ledger.path.parent.iterdir():
        assert b"4a1f-test-user" not in path.read_bytes()
    (digest,) = sqlite3.connect(ledger.path).execute("SELECT digest FROM counted_users").fetchone()
    assert len(digest) == 16


def test_a_batch_that_stored_nothing_counts_nothing(ledger):
    assert ledger.apply("") == ledger.apply(None) == 0
    assert ledger.changed_after(0) == (0, [])


def test_a_failed_apply_counts_nothing(ledger):
    with pytest.raises(json.JSONDecodeError):
        ledger.apply("\n".join([fact_line("u1", "FI"), "{broken"]))
    assert ledger.apply(fact_line("u1", "FI")) == 1, "u1 was not counted by the failed apply"


def test_a_checkpoint_with_committed_batches_and_no_ledger_is_refused(tmp_path):
    from bdf.config import ConfigError, StreamSettings

    stream = StreamSettings(checkpoint_location=str(tmp_path / "checkpoint"))
    open_ledger(stream).close()  # a new checkpoint: a new ledger
    commits = tmp_path / "checkpoint" / "profiles" / "commits"
    commits.mkdir(parents=True)
    (commits / "0").write_text("v1\n{}\n")
    open_ledger(stream).close()  # the ledger is there: fine
    (tmp_path / "checkpoint" / "aggregate-ledger" / "ledger.sqlite").unlink()
    with pytest.raises(ConfigError, match=r"stream.checkpoint_location .*no aggregate ledger"):
        open_ledger(stream)


@pytest.mark.spark
def test_profile_batch_replayed_upserts_the_same_rows_and_counts_dead_letters(spark, keys, sample, ledger):
    messages = kafka_frame(spark, [*sample[:20], "not json", {"nat": "FI"}], keys)
    profiles, dead, store = ListSink(), ListSink(), InMemoryAggregateStore()
    writer = ProfileBatchWriter(profiles, dead, ledger, store)
    prepared = prepare(messages, keys, MAX_BYTES)
    writer(prepared, 7)
    assert store.batches == {
        "profiles:7": {"received": 22, "stored": 20, "dead_lettered": 2, "newly_counted": 20}
    }
    writer(prepared, 7)
    assert set(profiles.rows) == {p["login"]["uuid"] for p in sample[:20]}
    assert store.batches == {
        "profiles:7": {"received": 22, "stored": 20, "dead_lettered": 2, "newly_counted": 0}
    }
    assert ledger_counts(ledger) == independent_counts(sample[:20])


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
def test_a_batch_retried_after_a_cassandra_outage_counts_every_row(spark, keys, sample, ledger):
    """The failed attempt's metrics (none) must not stand for the batch: the retried write
    is the one that counts and feeds the aggregates."""
    profiles, store = CassandraDownOnce(), InMemoryAggregateStore()
    writer = ProfileBatchWriter(profiles, ListSink(), ledger, store)
    writer(prepare(kafka_frame(spark, sample[:30], keys), keys, MAX_BYTES), 3)
    assert profiles.outages == 0 and len(profiles.rows) == 30
    assert store.batches == {
        "profiles:3": {"received": 30, "stored": 30, "dead_lettered": 0, "newly_counted": 30}
    }
    assert ledger_counts(ledger)["totals"]["all"][0] == 30


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
