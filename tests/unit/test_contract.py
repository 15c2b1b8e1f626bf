"""The input contract: declared once, enforced in the JVM, fuzzed with hypothesis.

Every message of a batch ends either stored, with the meaning it was sent with, or
dead-lettered with a reason naming a field and a rule; the batch never fails.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bdf.keyring import new_keyring
from bdf.schema import PROFILE_SCHEMA, schema_leaves
from jobs.contract import CONTRACT, GENDERS, NATIONALITIES, contract_json
from jobs.message_crypto import MessageKeys
from jobs.sinks import AggregateLedger
from jobs.stream import ProfileBatchWriter
from jobs.transform import prepare
from tests.factories import generated_profiles
from tests.messages import encode, kafka_frame

MAX_BYTES = 65_536
FIELDS = [rule.field for rule in CONTRACT]
REASON_SUBJECTS = {"message", *FIELDS, *(field.rsplit(".", 1)[0] for field in FIELDS if "." in field)}


def test_the_contract_covers_every_field_of_the_input_schema_and_nothing_else():
    assert sorted(FIELDS) == sorted(schema_leaves(PROFILE_SCHEMA))


def test_every_rule_describes_itself_for_the_register():
    for rule in CONTRACT:
        text = rule.describe()
        assert text.startswith(("text", "integer", "timestamp")), rule.field
    assert json.loads(contract_json())["rules"][0]["field"] == CONTRACT[0].field


# --- the fuzzer -----------------------------------------------------------------------

POOL = generated_profiles(60, seed="contract-fuzz")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
awkward_text = st.builds(
    lambda text, junk, at: text[:at] + junk + text[at:],
    st.text(max_size=20),
    st.sampled_from(["\n", "\u0000", "\u0007", "\ud800", "\udfff", "\u202e", "\ufeff", "'", '"', "\\"]),
    st.integers(0, 20),
)
long_text = st.integers(0, 400).map(lambda n: "x" * n)
timestamps = st.builds(
    lambda moment, form: moment.strftime(form),
    st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(3000, 12, 31)),
    st.sampled_from(
        ["%Y-%m-%dT%H:%M:%S.000Z", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S+02:00", "%c"]
    ),
)
new_values = (
    json_values | awkward_text | long_text | timestamps | st.sampled_from([*NATIONALITIES, *GENDERS, ""])
)


def _set(profile: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = profile
    for name in parents:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[leaf] = value


def _delete(profile: dict, path: str) -> None:
    *parents, leaf = path.split(".")
    node = profile
    for name in parents:
        node = node.get(name)
        if not isinstance(node, dict):
            return
    node.pop(leaf, None)


field_mutation = st.tuples(st.sampled_from(FIELDS), new_values).map(
    lambda m: lambda p: _set(p, *m)
) | st.sampled_from(FIELDS).map(lambda field: lambda p: _delete(p, field))


def _raw(profile: dict, damage: str, at: int) -> bytes:
    """The message's bytes, damaged below the JSON level."""
    try:
        data = json.dumps(profile, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: only JSON's \u escape can carry it
        data = json.dumps(profile).encode()
    at = at % (len(data) + 1)
    return {
        "none": data,
        "truncated": data[:at],
        "bad-byte": data[:at] + b"\xff" + data[at:],
        "envelope": json.dumps({"results": [profile]}).encode(),
        "trailing": data + b" x",
        "bom": b"\xef\xbb\xbf" + data,
        "duplicate": data[:-1] + b', "nat": "FI"}',
    }[damage]


messages = st.builds(
    lambda base, mutations, damage, at: _mutated(POOL[base], mutations, damage, at),
    st.integers(0, len(POOL) - 1),
    st.lists(field_mutation, min_size=0, max_size=3),
    st.sampled_from(["none"] * 6 + ["truncated", "bad-byte", "envelope", "trailing", "bom", "duplicate"]),
    st.integers(0, 10_000),
)


def _mutated(base: dict, mutations: list, damage: str, at: int) -> bytes:
    profile = copy.deepcopy(base)
    profile["login"]["uuid"] = str(uuid.uuid4())  # distinct rows, so each message is checked
    for mutate in mutations:
        mutate(profile)
    return _raw(profile, damage, at)


class ListSink:
    def __init__(self) -> None:
        self.frames: list = []

    def write(self, frame) -> None:
        self.frames.extend(frame.collect())


class Recorder:
    def __init__(self) -> None:
        self.batches: dict = {}

    def record_batch(self, query, batch_id, counts, at):
        self.batches[batch_id] = dict(counts)


def _expected_meaning(message: bytes) -> dict[str, Any]:
    """What a stored row must say of the message it came from (plain Python, independently)."""
    profile = json.loads(message)
    name = profile.get("name") or {}
    return {
        "user_id": profile["login"]["uuid"].lower(),
        "nationality": profile["nat"],
        "gender": profile.get("gender") or "unknown",
        "full_name": " ".join(
            part for part in (name.get("title"), name.get("first"), name.get("last")) if part
        )
        or None,
        "email": profile.get("email") or None,
        "birth_date": dt.datetime.fromisoformat(profile["dob"]["date"].replace("Z", "+00:00"))
        .astimezone(dt.UTC)
        .date(),
    }


@pytest.mark.spark
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batch=st.lists(messages, min_size=40, max_size=40))
def test_fuzzed_messages_are_stored_in_meaning_or_dead_lettered_and_the_batch_never_fails(
    spark, tmp_path_factory, batch
):
    keys = new_keyring()
    valid = [encode(profile) for profile in POOL[:8]]
    values = [*valid, *batch]
    stored, dead, recorder = ListSink(), ListSink(), Recorder()
    ledger = AggregateLedger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite")
    writer = ProfileBatchWriter(stored, dead, ledger, recorder)
    writer(prepare(kafka_frame(spark, values, keys), keys, MAX_BYTES), 0)  # raises if the batch fails

    counts = recorder.batches[0]
    assert counts["received"] == len(values) == counts["stored"] + counts["dead_lettered"]
    assert counts["newly_counted"] == len({row.user_id for row in stored.frames})
    ledger.close()
    assert len(stored.frames) == counts["stored"] and len(dead.frames) == counts["dead_lettered"]
    dead_offsets = set()
    for letter in dead.frames:
        headers = {h.key: bytes(h.value).decode() for h in letter.headers}
        dead_offsets.add(int(headers["dlq.source.offset"]))
        subjects = {problem.split(":", 1)[0] for problem in headers["dlq.reason"].split("; ")}
        assert subjects - {"and 1 more", "and 2 more"} <= REASON_SUBJECTS, headers["dlq.reason"]
    assert not dead_offsets & set(range(len(valid))), "an unmodified profile was dead-lettered"

    rows = {row.user_id: row for row in stored.frames}
    for offset, message in enumerate(values):
        if offset in dead_offsets:
            continue
        expected = _expected_meaning(message)
        row = rows[expected["user_id"]]
        assert row.nationality == expected["nationality"] in NATIONALITIES
        assert row.gender == expected["gender"] in (*GENDERS, "unknown")
        assert row.birth_date == expected["birth_date"]
        full_name = row.full_name_enc and keys.decrypt(row.full_name_enc, "full_name_enc")
        assert full_name == expected["full_name"]
        assert (row.email_enc and keys.decrypt(row.email_enc, "email_enc")) == expected["email"]


# --- a store that refuses a row --------------------------------------------------------


class FactRecorder:
    """Stands in for the aggregates' ledger: the user ids of the facts it was given."""

    def __init__(self) -> None:
        self.user_ids: list[str] = []

    def apply(self, lines: str) -> int:
        self.user_ids += [json.loads(line)["user_id"] for line in lines.splitlines()]
        return len(lines.splitlines())


class RefusingCassandra:
    """Refuses any write holding one of ``refused`` user ids with the JVM error Cassandra's
    connector raised on the lab; stores everything else (upsert by user id)."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.rows: dict[str, Any] = {}
        self.writes = 0

    def write(self, frame) -> None:
        self.writes += 1
        rows = frame.collect()
        if any(row.user_id in self.refused for row in rows):
            raise RuntimeError(
                "An error occurred while calling o77.save.\n: org.apache.spark.SparkException: Job aborted.\n"
                "Caused by: java.lang.IllegalArgumentException: UUID string too large"
            )
        self.rows.update({row.user_id: row for row in rows})


@pytest.mark.spark
def test_a_row_the_store_refuses_becomes_a_dead_letter_and_the_rest_of_the_batch_is_stored(spark, keys):
    profiles = generated_profiles(30, seed="refused-row")
    poison = profiles[17]["login"]["uuid"]
    cassandra, dead, recorder = RefusingCassandra({poison}), ListSink(), Recorder()
    facts = FactRecorder()
    writer = ProfileBatchWriter(cassandra, dead, facts, recorder)
    writer(prepare(kafka_frame(spark, profiles, keys), keys, MAX_BYTES), 3)

    assert set(cassandra.rows) == {p["login"]["uuid"] for p in profiles} - {poison}
    (letter,) = dead.frames
    headers = {h.key: bytes(h.value).decode() for h in letter.headers}
    assert headers["dlq.source.offset"] == "17"
    assert (
        headers["dlq.reason"] == "cassandra refused the row: IllegalArgumentException: UUID string too large"
    )
    assert MessageKeys.of(keys).open(bytes(letter.value), "user_profiles") == encode(profiles[17])
    assert recorder.batches[3] == {"received": 30, "stored": 29, "dead_lettered": 1, "newly_counted": 29}
    assert poison not in facts.user_ids and len(facts.user_ids) == 29, (
        "the aggregates count only what was stored"
    )


@pytest.mark.spark
def test_a_store_that_refuses_every_row_fails_the_batch_instead_of_dead_lettering_it(spark, keys):
    profiles = generated_profiles(4, seed="refuse-all")
    cassandra = RefusingCassandra({p["login"]["uuid"] for p in profiles})
    writer = ProfileBatchWriter(cassandra, ListSink(), FactRecorder(), Recorder())
    with pytest.raises(RuntimeError, match="UUID string too large"):
        writer(prepare(kafka_frame(spark, profiles, keys), keys, MAX_BYTES), 0)


@pytest.mark.spark
def test_a_quarantined_message_is_dead_lettered_unprocessed_with_the_operators_reason(spark, keys):
    from jobs.quarantine import QuarantinedMessage
    from jobs.stream import without_quarantined

    profiles = generated_profiles(5, seed="quarantine")
    quarantined = [QuarantinedMessage("user_profiles", 0, 2, "crashes the Cassandra write")]
    prepared = without_quarantined(prepare(kafka_frame(spark, profiles, keys), keys, MAX_BYTES), quarantined)
    stored, dead, recorder = ListSink(), ListSink(), Recorder()
    ProfileBatchWriter(stored, dead, FactRecorder(), recorder)(prepared, 0)
    assert {row.user_id for row in stored.frames} == {p["login"]["uuid"] for p in profiles} - {
        profiles[2]["login"]["uuid"]
    }
    (letter,) = dead.frames
    headers = {h.key: bytes(h.value).decode() for h in letter.headers}
    assert (headers["dlq.source.offset"], headers["dlq.reason"]) == (
        "2",
        "quarantined: crashes the Cassandra write",
    )
