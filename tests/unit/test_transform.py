"""The GDPR transformation, field by field, on generated profiles (local SparkSession)."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import json

import pytest

from bdf.keyring import DecryptionError, rotated
from bdf.schema import PROFILE_SCHEMA, STORED_SCHEMA, schema_leaves
from jobs.message_crypto import MIN_ENVELOPE_BYTES as ENVELOPE_OVERHEAD
from jobs.message_crypto import MessageKeys
from jobs.transform import (
    ENCRYPTED_COLUMNS,
    FIELD_TREATMENT,
    parse_messages,
    prepare,
    rejected_messages,
    stored_rows,
    valid_profiles,
)
from tests.factories import generated_profiles, leaf_values
from tests.factories import with_value as _with
from tests.messages import encode, kafka_frame

pytestmark = pytest.mark.spark
MAX_BYTES = 65_536


def stored_by_id(spark, profiles, keys):
    """What the stream job stores (``jobs.stream`` writes ``stored_rows(prepare(...))``)."""
    prepared = prepare(kafka_frame(spark, profiles, keys), keys, MAX_BYTES)
    return {row.user_id: row for row in stored_rows(prepared).collect()}


@pytest.fixture(scope="module")
def sample():
    """Enough generated profiles that every nationality and quirk shows up."""
    return generated_profiles(300, seed="transform-tests")


def test_every_generated_profile_is_valid_and_stored_once(spark, keys, sample):
    rows = stored_by_id(spark, sample, keys)
    assert set(rows) == {p["login"]["uuid"] for p in sample}


def test_full_name_is_title_first_last_encrypted(spark, keys, sample):
    rows = stored_by_id(spark, sample, keys)
    for profile in sample:
        name = profile["name"]
        expected = " ".join(part for part in (name["title"], name["first"], name["last"]) if part)
        assert keys.decrypt(rows[profile["login"]["uuid"]].full_name_enc, "full_name_enc") == expected


def test_full_address_keeps_alphanumeric_and_numeric_postcodes(spark, keys, sample):
    rows = stored_by_id(spark, sample, keys)
    postcode_kinds = set()
    for profile in sample:
        loc = profile["location"]
        postcode_kinds.add(type(loc["postcode"]))
        street = f"{loc['street']['number']} {loc['street']['name']}"
        expected = ", ".join([street, loc["city"], loc["state"], str(loc["postcode"]), loc["country"]])
        assert keys.decrypt(rows[profile["login"]["uuid"]].address_enc, "address_enc") == expected
    assert postcode_kinds == {int, str}, "the sample must hold both postcode kinds"


def test_email_phone_cell_decrypt_with_python_cryptography(spark, keys, sample):
    rows = stored_by_id(spark, sample, keys)
    for profile in sample:
        row = rows[profile["login"]["uuid"]]
        for field in ("email", "phone", "cell"):
            assert (
                keys.decrypt(getattr(row, ENCRYPTED_COLUMNS[field]), ENCRYPTED_COLUMNS[field])
                == profile[field]
            )


def test_same_plaintext_encrypts_differently_each_time(spark, keys, sample):
    twin = copy.deepcopy(sample[0])
    twin["login"]["uuid"] = "00000000-0000-4000-8000-000000000001"
    rows = stored_by_id(spark, [sample[0], twin], keys)
    first, second = rows.values()
    assert first.email_enc != second.email_enc  # random IV: equal emails are not linkable


def test_ciphertext_moved_to_another_column_does_not_decrypt(spark, keys, sample):
    row = next(iter(stored_by_id(spark, sample[:1], keys).values()))
    with pytest.raises(DecryptionError):
        keys.decrypt(row.phone_enc, "cell_enc")


def test_rotated_key_encrypts_new_rows_and_old_rows_still_decrypt(spark, keys, sample):
    old_row = stored_by_id(spark, sample[:1], keys)[sample[0]["login"]["uuid"]]
    newer = rotated(keys)
    new_row = stored_by_id(spark, sample[:1], newer)[sample[0]["login"]["uuid"]]
    assert (old_row.key_id, new_row.key_id) == (1, 2)
    assert new_row.email_enc[1:3] == (2).to_bytes(2, "big")
    assert newer.decrypt(old_row.email_enc, "email_enc") == newer.decrypt(new_row.email_enc, "email_enc")
    with pytest.raises(DecryptionError, match="key id 2"):
        keys.decrypt(new_row.email_enc, "email_enc")


def test_email_pseudonym_is_hmac_sha256_of_normalized_email(spark, keys, sample):
    shouting = copy.deepcopy(sample[0])
    shouting["email"] = "  " + shouting["email"].upper() + " "
    row = next(iter(stored_by_id(spark, [shouting], keys).values()))
    expected = hmac.new(keys.pseudonym_key, sample[0]["email"].lower().encode(), hashlib.sha256).hexdigest()
    assert row.email_pseudonym == expected == keys.pseudonym(shouting["email"])
    assert row.email_domain == sample[0]["email"].split("@")[1].lower()


def test_dates_are_utc_with_year_month_day_hierarchy_including_leap_day(spark, keys, sample):
    leap = copy.deepcopy(sample[0])
    leap["dob"] = {"date": "1992-02-29T23:59:59.999Z", "age": 34}
    leap["registered"] = {"date": "2012-11-03T17:05:48.120Z", "age": 14}
    row = next(iter(stored_by_id(spark, [leap], keys).values()))
    assert row.birth_date == dt.date(1992, 2, 29)
    assert (row.birth_year, row.birth_month, row.birth_day) == (1992, 2, 29)
    assert row.registered_at.replace(tzinfo=None) == dt.datetime(2012, 11, 3, 17, 5, 48, 120000)
    assert (row.registered_year, row.registered_month, row.registered_day) == (2012, 11, 3)


def test_stored_row_has_exactly_the_declared_columns_and_no_age_or_secret(spark, keys, sample):
    stored = stored_rows(prepare(kafka_frame(spark, sample[:3], keys), keys, MAX_BYTES))
    assert stored.schema.fieldNames() == STORED_SCHEMA.fieldNames()
    forbidden = ("age", "password", "salt", "md5", "sha1", "sha256", "username", "picture", "latitude")
    assert not [c for c in stored.columns for word in forbidden if word in c.split("_")]


def test_missing_optional_values_become_null_not_empty_strings(spark, keys, sample):
    sparse = copy.deepcopy(sample[0])
    sparse["name"]["title"] = None
    sparse["phone"] = None
    sparse["cell"] = ""
    sparse["email"] = None
    sparse["location"]["street"]["number"] = None
    row = next(iter(stored_by_id(spark, [sparse], keys).values()))
    assert (
        keys.decrypt(row.full_name_enc, "full_name_enc")
        == f"{sparse['name']['first']} {sparse['name']['last']}"
    )
    assert keys.decrypt(row.address_enc, "address_enc").startswith(
        sparse["location"]["street"]["name"] + ", "
    )
    assert (row.phone_enc, row.cell_enc, row.email_enc, row.email_pseudonym, row.email_domain) == (None,) * 5


def test_empty_name_and_address_parts_are_absent_not_joined(spark, keys, sample):
    """Empty text counts as absent (the contract): no stray separator (found by the fuzz test)."""
    sparse = copy.deepcopy(sample[1])
    sparse["name"]["title"] = ""
    sparse["location"]["street"]["name"] = ""
    sparse["location"]["state"] = ""
    row = next(iter(stored_by_id(spark, [sparse], keys).values()))
    name, loc = sparse["name"], sparse["location"]
    assert keys.decrypt(row.full_name_enc, "full_name_enc") == f"{name['first']} {name['last']}"
    expected_address = f"{loc['street']['number']}, {loc['city']}, {loc['postcode']}, {loc['country']}"
    assert keys.decrypt(row.address_enc, "address_enc") == expected_address


def test_no_input_text_appears_in_plain_anywhere_in_stored_rows(spark, keys, sample):
    """Scan every column, binary ones included, for every personal or secret input value."""
    rows = stored_by_id(spark, sample, keys)
    kept_as_is = {"gender", "nat", "location.country", "login.uuid", "location.timezone.offset"}
    hex_columns = {"user_id", "email_pseudonym"}  # hex digests: digit runs would match by chance
    for profile in sample:
        row = rows[profile["login"]["uuid"]]
        # Text and binary columns; dates, times and numbers are typed, not free text.
        haystack = " ".join(
            value.decode("latin-1") if isinstance(value, bytes | bytearray) else value
            for column, value in row.asDict().items()
            if column not in hex_columns and isinstance(value, str | bytes | bytearray)
        ).lower()
        for path, value in leaf_values(profile):
            if path in kept_as_is or path.endswith(".age") or value is None or len(str(value)) < 4:
                continue
            if path in ("dob.date", "registered.date"):
                continue  # stored as proper date/timestamp types, by design
            assert str(value).lower() not in haystack, f"{path} leaked in plain text"


def test_every_input_field_has_a_treatment_and_every_stored_column_a_source():
    assert set(schema_leaves(PROFILE_SCHEMA)) == set(FIELD_TREATMENT)
    produced = {column for _, columns in FIELD_TREATMENT.values() for column in columns}
    bookkeeping = {"key_id", "produced_at", "stored_at"}
    assert produced | bookkeeping == set(STORED_SCHEMA.fieldNames())
    for path, (treatment, columns) in FIELD_TREATMENT.items():
        assert (treatment == "dropped") == (not columns), path


UUID = "0b6f3a5e-3f7c-4a58-9a52-2f1c9c7d8e11"
# Each poison message of the hostile-input issue, and the reason it must be dead-lettered with.
MALFORMED = {
    "not-json": (lambda p: "this is not json", "message: not valid JSON (line 1, column "),
    "json-array": (lambda p: "[1, 2, 3]", "message: not a JSON object"),
    "trailing-junk": (lambda p: json.dumps(p) + " {}", "message: not valid JSON"),
    "single-quotes": (lambda p: "{'nat': 'FI'}", "message: not valid JSON"),
    "duplicate-key": (lambda p: json.dumps(p)[:-1] + ', "nat": "US"}', "message: not valid JSON"),
    "bad-utf8": (lambda p: json.dumps(p).encode()[:-2] + b'\xff"}', "message: not valid UTF-8"),
    "empty": (lambda p: "", "message: empty"),
    "null-value": (lambda p: None, "message: empty"),
    "oversize": (lambda p: {**p, "pad": "x" * MAX_BYTES}, "more than the limit of 65536"),
    "no-uuid": (lambda p: _with(p, "login.uuid", None), "login.uuid: required"),
    "bad-uuid": (lambda p: _with(p, "login.uuid", "not-a-uuid"), "login.uuid: does not match the pattern"),
    "uuid-newline": (lambda p: _with(p, "login.uuid", UUID + "\n"), "login.uuid: longer than 36 characters"),
    "uuid-number": (lambda p: _with(p, "login.uuid", 42), "login.uuid: must be text, not a number"),
    "no-nat": (lambda p: _with(p, "nat", None), "nat: required"),
    "long-nat": (lambda p: _with(p, "nat", "F" * 20_000), "nat: longer than 2 characters"),
    "unknown-nat": (lambda p: _with(p, "nat", "ZZ"), "nat: not one of the allowed values"),
    "gender-object": (lambda p: _with(p, "gender", {"a": 1}), "gender: must be text, not an object"),
    "email-number": (lambda p: _with(p, "email", 12345), "email: must be text, not a number"),
    "name-array": (lambda p: _with(p, "name.first", ["a"]), "name.first: must be text, not an array"),
    "control-char": (lambda p: _with(p, "name.last", "a\u0007b"), "name.last: contains a control character"),
    "lone-surrogate": (
        lambda p: json.dumps(_with(p, "location.city", "a\ud800b")),  # escaped: UTF-8 cannot carry it
        "location.city: contains an unpaired",
    ),
    "location-text": (lambda p: _with(p, "location", "Lahti"), "location: must be an object, not text"),
    "bad-dob": (lambda p: _with(p, "dob.date", "last tuesday"), "dob.date: not an ISO-8601 timestamp"),
    "no-offset": (lambda p: _with(p, "dob.date", "1987-02-28T09:41:12"), "dob.date: not an ISO-8601"),
    "born-2999": (lambda p: _with(p, "dob.date", "2999-01-01T00:00:00.000Z"), "dob.date: in the future"),
    "born-1800": (lambda p: _with(p, "dob.date", "1800-01-01T00:00:00Z"), "dob.date: before 1900-01-01"),
    "registered-before-birth": (
        lambda p: _with(
            _with(p, "dob.date", "1990-01-01T00:00:00Z"), "registered.date", "1980-01-01T00:00:00Z"
        ),
        "registered.date: before dob.date",
    ),
    "no-registered": (lambda p: {**p, "registered": {"age": 3}}, "registered.date: required"),
    "street-number-text": (
        lambda p: _with(p, "location.street.number", "twelve"),
        "location.street.number: must be an integer, not text",
    ),
    "age-float": (lambda p: _with(p, "dob.age", 39.5), "dob.age: must be an integer, not a number"),
    "long-first-name": (
        lambda p: _with(p, "name.first", "x" * 101),
        "name.first: longer than 100 characters",
    ),
}


@pytest.mark.parametrize(("mutate", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_dead_lettered_with_its_reason_and_original_bytes_encrypted(
    spark, keys, sample, mutate, reason
):
    good = sample[0]
    bad = mutate(copy.deepcopy(good))
    parsed = parse_messages(kafka_frame(spark, [good, bad], keys), keys, MAX_BYTES)
    assert valid_profiles(parsed).count() == 1
    (letter,) = rejected_messages(parsed).collect()
    headers = {h.key: bytes(h.value).decode() for h in letter.headers}
    assert reason in headers["dlq.reason"]
    assert headers["dlq.source.offset"] == "1"
    assert headers["dlq.source.topic"] == "user_profiles"
    original = encode(bad)
    if original is None:
        assert (letter.value, headers["dlq.value.bytes"]) == (None, "0")
        return
    assert headers["dlq.value.bytes"] == str(len(original) + ENVELOPE_OVERHEAD)
    # Kept whole up to the size limit and still encrypted, so that it can be replayed after a fix.
    assert MessageKeys.of(keys).open(bytes(letter.value), "user_profiles") == original[:MAX_BYTES]


def test_several_field_problems_are_all_named_without_their_values(spark, keys, sample):
    bad = _with(_with(sample[0], "nat", None), "dob.date", "never")
    (letter,) = rejected_messages(parse_messages(kafka_frame(spark, [bad], keys), keys, MAX_BYTES)).collect()
    reason = dict((h.key, bytes(h.value).decode()) for h in letter.headers)["dlq.reason"]
    assert reason == "dob.date: not an ISO-8601 timestamp with a UTC offset; nat: required"


def test_a_nationality_in_lower_case_or_a_postcode_as_number_is_judged_as_sent(spark, keys, sample):
    """Postcodes come as numbers for some nationalities (kept); nationality codes are upper case."""
    numeric = _with(sample[0], "location.postcode", 71502)
    lower = _with(_with(sample[1], "nat", sample[1]["nat"].lower()), "login.uuid", UUID)
    parsed = parse_messages(kafka_frame(spark, [numeric, lower], keys), keys, MAX_BYTES)
    assert [row.offset for row in valid_profiles(parsed).collect()] == [0]


def test_encryption_key_is_redacted_from_the_query_plan(spark, keys, sample):
    """The key is a literal in the plan; Spark's UI and logs must not show it."""
    from jobs.stream import REDACTED_PLAN_STRINGS

    stored = stored_rows(prepare(kafka_frame(spark, sample[:1], keys), keys, MAX_BYTES))
    spark.conf.set("spark.sql.redaction.string.regex", REDACTED_PLAN_STRINGS)
    try:
        plan = stored._jdf.queryExecution().toString().lower()
    finally:
        spark.conf.unset("spark.sql.redaction.string.regex")
    assert "aes_encrypt" in plan
    assert keys.active_key.hex() not in plan
    assert keys.pseudonym_key.hex() not in plan
    assert not [pad for pad in keys.hmac_pads() if pad.hex() in plan]  # pads give the key away too
