"""Kafka message values: sealed by the producer's helper, opened by the job in the JVM.

What cannot be opened is a dead letter with the reason Python gives too; dead letters stay
encrypted; after a rotation the old and the new message key both open.
"""

from __future__ import annotations

import json

import pytest

from bdf.keyring import KeyRing, new_keyring, rotated
from jobs.message_crypto import (
    MIN_ENVELOPE_BYTES,
    NOT_ENCRYPTED,
    UNDECRYPTABLE,
    MessageError,
    MessageKeys,
)
from jobs.transform import parse_messages, prepare, rejected_messages, stored_rows
from tests.factories import generated_profiles
from tests.messages import encode, kafka_frame

pytestmark = pytest.mark.spark
MAX_BYTES = 65_536
TOPIC = "user_profiles"


@pytest.fixture(scope="module")
def profiles():
    return generated_profiles(6, seed="message-crypto")


def _undecryptable(keys: KeyRing, profile: dict) -> dict[str, tuple[bytes, str]]:
    """Values the job cannot open, and the reason each must get."""
    plain = encode(profile)
    sealed = MessageKeys.of(keys).seal(plain, TOPIC)
    tampered = bytearray(sealed)
    tampered[-1] ^= 0x01
    other_material = MessageKeys(keys.active_message_key_id, {keys.active_message_key_id: bytes(32)})
    return {
        "plain-json": (plain, NOT_ENCRYPTED),
        "too-short": (sealed[: MIN_ENVELOPE_BYTES - 1], NOT_ENCRYPTED),
        "other-version": (b"\x02" + sealed[1:], NOT_ENCRYPTED),
        "unknown-key-id": (b"\x01\x00\x07" + sealed[3:], "message: unknown key id 7"),
        "tampered-tag": (bytes(tampered), UNDECRYPTABLE),
        "another-topic": (MessageKeys.of(keys).seal(plain, "elsewhere"), UNDECRYPTABLE),
        "same-id-other-key": (other_material.seal(plain, TOPIC), UNDECRYPTABLE),
        # A stored column's ciphertext is no message: other key family, other associated data.
        "a-column-ciphertext": (keys.encrypt(plain.decode(), "full_name_enc"), UNDECRYPTABLE),
    }


def test_the_producers_envelope_round_trips_through_the_jobs_plan(spark, keys, profiles):
    stored = {
        row.user_id: row
        for row in stored_rows(prepare(kafka_frame(spark, profiles, keys), keys, MAX_BYTES)).collect()
    }
    assert set(stored) == {p["login"]["uuid"] for p in profiles}
    for profile in profiles:
        row = stored[profile["login"]["uuid"]]
        assert keys.decrypt(row.email_enc, "email_enc") == profile["email"]
        assert row.nationality == profile["nat"]


def test_python_opens_what_python_seals_and_refuses_with_the_jobs_reasons(keys, profiles):
    message_keys = MessageKeys.of(keys)
    plain = encode(profiles[0])
    assert message_keys.open(message_keys.seal(plain, TOPIC), TOPIC) == plain
    for value, reason in _undecryptable(keys, profiles[0]).values():
        with pytest.raises(MessageError, match=f"^{reason}$"):
            message_keys.open(value, TOPIC)


def test_every_value_that_cannot_be_opened_is_a_dead_letter_with_its_reason(spark, keys, profiles):
    cases = _undecryptable(keys, profiles[0])
    values = [encode(p) for p in profiles[1:3]] + [value for value, _ in cases.values()]
    frame = spark.createDataFrame(
        [
            (None, MessageKeys.of(keys).seal(v, TOPIC) if i < 2 else v, TOPIC, 0, i, None)
            for i, v in enumerate(values)
        ],
        kafka_frame(spark, [], None).schema,
    )
    parsed = parse_messages(frame, keys, MAX_BYTES)
    reasons = {row.offset: row.rejection for row in parsed.select("offset", "rejection").collect()}
    assert [reasons[0], reasons[1]] == [None, None]
    assert [reasons[offset] for offset in range(2, len(values))] == [reason for _, reason in cases.values()]


def test_messages_under_the_old_and_the_new_message_key_are_both_stored(spark, profiles):
    old = new_keyring()
    new = rotated(old)
    assert new.active_message_key_id == 2 and new.message_keys[1] == old.message_keys[1]
    before, after = profiles[:3], profiles[3:]
    frame = kafka_frame(spark, before, old).union(kafka_frame(spark, after, new))
    stored = stored_rows(prepare(frame, new, MAX_BYTES)).collect()
    assert {row.user_id for row in stored} == {p["login"]["uuid"] for p in profiles}
    # The job holding only the old file cannot open the new key's messages: a clear reason.
    parsed = parse_messages(kafka_frame(spark, after[:1], new), old, MAX_BYTES)
    assert [row.rejection for row in parsed.collect()] == ["message: unknown key id 2"]


def test_a_dead_letter_stays_encrypted_whatever_its_reason(spark, keys, profiles):
    contract_violation = {**profiles[0], "nat": "ZZ"}
    sealed_violation = MessageKeys.of(keys).seal(encode(contract_violation), TOPIC)
    plain_profile = encode(profiles[1])  # an old producer's message: valid, but not encrypted
    frame = spark.createDataFrame(
        [(None, sealed_violation, TOPIC, 0, 0, None), (None, plain_profile, TOPIC, 0, 1, None)],
        kafka_frame(spark, [], None).schema,
    )
    letters = {
        row.headers[-2].value.decode(): row
        for row in rejected_messages(parse_messages(frame, keys, MAX_BYTES)).collect()
    }
    assert set(letters) == {"0", "1"}
    # The sealed one keeps its envelope byte for byte, so a replay re-publishes it unchanged.
    assert bytes(letters["0"].value) == sealed_violation
    # The plain one is sealed by the job under the active message key for its source topic.
    resealed = bytes(letters["1"].value)
    assert profiles[1]["email"].encode() not in resealed and plain_profile not in resealed
    assert MessageKeys.of(keys).open(resealed, TOPIC) == plain_profile
    # Replayed after the upgrade, the old producer's profile is opened and stored.
    replay = spark.createDataFrame([(None, resealed, TOPIC, 0, 2, None)], frame.schema)
    (row,) = stored_rows(prepare(replay, keys, MAX_BYTES)).collect()
    assert row.user_id == profiles[1]["login"]["uuid"]


def test_the_message_keys_are_redacted_from_the_query_plan(spark, keys, profiles):
    from jobs.stream import REDACTED_PLAN_STRINGS

    prepared = prepare(kafka_frame(spark, profiles[:1], keys), keys, MAX_BYTES)
    spark.conf.set("spark.sql.redaction.string.regex", REDACTED_PLAN_STRINGS)
    try:
        plan = prepared._jdf.queryExecution().toString().lower()
    finally:
        spark.conf.unset("spark.sql.redaction.string.regex")
    assert "aes_decrypt" in plan
    assert not any(key.hex() in plan for key in keys.message_keys.values())


def test_a_key_file_without_message_keys_stops_the_job_with_what_to_do(spark, keys, profiles):
    from bdf.config import ConfigError

    old_file = KeyRing(keys.active_key_id, keys.encryption_keys, keys.pseudonym_key)
    with pytest.raises(ConfigError, match="bdf-keys add-message-key"):
        prepare(kafka_frame(spark, profiles[:1], keys), old_file, MAX_BYTES)


def test_the_message_part_opens_like_the_whole_key_file(tmp_path, keys, profiles):
    import os

    from bdf.keyring import message_part, save_keyring
    from jobs.message_crypto import load_message_keys

    whole, part = tmp_path / "keys.json", tmp_path / "message-keys.json"
    save_keyring(keys, whole)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(message_part(keys)).encode())
    os.close(fd)
    assert "pseudonym_key" not in part.read_text() and "encryption_keys" not in part.read_text()
    sealed = load_message_keys(part).seal(encode(profiles[0]), TOPIC)
    assert load_message_keys(whole).open(sealed, TOPIC) == encode(profiles[0])
