"""The GDPR transformation, as plain ``DataFrame -> DataFrame`` functions.

Chain: Kafka messages (values sealed by the producer, ``jobs.message_crypto``) ->
``parse_messages`` (opened in the JVM, profile struct + rejection reason) ->
``normalized_columns`` (plain-text working columns, never stored) ->
``protected_columns`` (the Cassandra row: personal data encrypted, secrets gone; the
job's ``prepare`` / ``stored_rows``) -> ``aggregate_fact_lines`` (what each stored row
counts under in the aggregates: no personal data).

Everything runs as Spark built-ins in the JVM: no row passes through Python.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from bdf.keyring import KeyRing, associated_data, envelope_header
from bdf.schema import CORRUPT_RECORD_COLUMN, PARSE_SCHEMA, STORED_SCHEMA
from jobs.aggregates import (
    AGGREGATE_COLLECTIONS,
    BIRTH_MONTHS,
    EMAIL_DOMAINS,
    EPOCH,
    GENDER,
    NATIONALITY,
    NATIONALITY_GENDER,
    REGISTRATIONS,
    TOTALS,
)
from jobs.contract import CONTRACT_UDF, register_contract
from jobs.dead_letter import (
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    VALUE_BYTES_HEADER,
)
from jobs.message_crypto import MessageKeys, opened_column, opening_failure_column, sealed_column

UNKNOWN = "unknown"

# Plain-text working column -> stored encrypted column. The stored column name is
# part of the GCM associated data, so ciphertexts cannot be swapped between columns.
ENCRYPTED_COLUMNS = {
    "full_name": "full_name_enc",
    "full_address": "address_enc",
    "email": "email_enc",
    "phone": "phone_enc",
    "cell": "cell_enc",
}

# What happens to every field of the input record. The GDPR register (gdpr/) is
# checked against this table and this table against the code (tests/unit).
FIELD_TREATMENT: dict[str, tuple[str, tuple[str, ...]]] = {
    "gender": ("kept", ("gender",)),
    "name.title": ("encrypted", ("full_name_enc",)),
    "name.first": ("encrypted", ("full_name_enc",)),
    "name.last": ("encrypted", ("full_name_enc",)),
    "location.street.number": ("encrypted", ("address_enc",)),
    "location.street.name": ("encrypted", ("address_enc",)),
    "location.city": ("encrypted", ("address_enc",)),
    "location.state": ("encrypted", ("address_enc",)),
    "location.postcode": ("encrypted", ("address_enc",)),
    "location.country": ("kept", ("country", "address_enc")),
    "location.coordinates.latitude": ("dropped", ()),
    "location.coordinates.longitude": ("dropped", ()),
    "location.timezone.offset": ("dropped", ()),
    "location.timezone.description": ("dropped", ()),
    "email": ("encrypted", ("email_enc", "email_pseudonym", "email_domain")),
    "login.uuid": ("kept", ("user_id",)),
    "login.username": ("dropped", ()),
    "login.password": ("dropped", ()),
    "login.salt": ("dropped", ()),
    "login.md5": ("dropped", ()),
    "login.sha1": ("dropped", ()),
    "login.sha256": ("dropped", ()),
    "dob.date": ("derived", ("birth_date", "birth_year", "birth_month", "birth_day")),
    "dob.age": ("dropped", ()),
    "registered.date": (
        "derived",
        ("registered_at", "registered_year", "registered_month", "registered_day"),
    ),
    "registered.age": ("dropped", ()),
    "phone": ("encrypted", ("phone_enc",)),
    "cell": ("encrypted", ("cell_enc",)),
    "id.name": ("dropped", ()),
    "id.value": ("dropped", ()),
    "picture.large": ("dropped", ()),
    "picture.medium": ("dropped", ()),
    "picture.thumbnail": ("dropped", ()),
    "nat": ("kept", ("nationality",)),
}


def _aggregate_keys(row: Column) -> dict[str, Column]:
    """One MongoDB collection per aggregate, and the key a stored ``row`` counts under.

    Ages are not counted (they go stale): birth months are; readers derive ages and bands.
    """
    keys = {
        NATIONALITY: row["nationality"],
        GENDER: row["gender"],
        NATIONALITY_GENDER: F.concat_ws("|", row["nationality"], row["gender"]),
        EMAIL_DOMAINS: row["email_domain"],
        BIRTH_MONTHS: F.date_format(row["birth_date"], "yyyy-MM"),
        REGISTRATIONS: F.date_format(row["registered_at"], "yyyy-MM"),
        TOTALS: F.lit("all"),
    }
    assert tuple(keys) == AGGREGATE_COLLECTIONS
    return keys


def _blank_to_null(column: Column) -> Column:
    return F.when(column != "", column)


def _iso_timestamp(column: Column) -> Column:
    """ISO-8601 text to a timestamp (an instant); null when it does not parse."""
    return column.cast("timestamp")


def _rejection_reason(max_message_bytes: int, keys: MessageKeys) -> Column:
    """Why a message cannot become a profile (``field: rule``), or null when it can.

    The first failing stage explains itself: an empty or oversize message is not checked
    further, nor one that cannot be opened (not encrypted, unknown key id, wrong tag);
    the contract (``jobs.contract``, checked in the JVM on the decrypted bytes) comes
    before Spark's lenient JSON reader, whose own refusals and unreadable dates are kept
    as a last guard.
    """
    size = F.length("value")
    profile = F.col("profile")
    empty = F.col("value").isNull() | (size == 0) | (F.length("plaintext") == 0)
    unreadable_date = (
        _iso_timestamp(profile.dob.date).isNull() | _iso_timestamp(profile.registered.date).isNull()
    )
    return F.coalesce(
        F.when(empty, F.lit("message: empty")),
        F.when(
            size > max_message_bytes,
            F.format_string("message: %d bytes, more than the limit of %d", size, F.lit(max_message_bytes)),
        ),
        opening_failure_column(F.col("value"), F.col("plaintext"), keys),
        F.call_udf(CONTRACT_UDF, F.col("plaintext")),
        F.when(profile[CORRUPT_RECORD_COLUMN].isNotNull(), F.lit("message: refused by Spark's JSON reader")),
        F.when(unreadable_date, F.lit("dob.date or registered.date: not a timestamp Spark reads")),
    )


def parse_messages(messages: DataFrame, keys: KeyRing, max_message_bytes: int) -> DataFrame:
    """Kafka rows (key, value, topic, partition, offset, timestamp) + ``plaintext`` (the
    opened value, null when it cannot be opened) + ``dead_letter_value`` + ``profile`` +
    ``rejection``."""
    register_contract(messages.sparkSession)
    message_keys = MessageKeys.of(keys)
    size_ok = F.length("value") <= max_message_bytes
    text = F.when(size_ok, F.col("plaintext").cast("string"))
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD_COLUMN}
    return (
        messages.withColumn("plaintext", opened_column(F.col("value"), F.col("topic"), message_keys))
        .withColumn("dead_letter_value", _dead_letter_value(size_ok, message_keys, max_message_bytes))
        .withColumn("profile", F.from_json(text, PARSE_SCHEMA, options))
        .withColumn("rejection", _rejection_reason(max_message_bytes, message_keys))
    )


def _dead_letter_value(size_ok: Column, keys: MessageKeys, max_message_bytes: int) -> Column:
    """A dead letter's value is always an envelope of its source topic: the original one
    when it opened and fits (so a replay re-publishes it unchanged), else what was received
    (the plaintext of an oversize one cut to the limit, an old producer's plain JSON, a
    foreign envelope) sealed under the active message key."""
    received = F.substring(F.coalesce("plaintext", "value"), 1, max_message_bytes)
    return F.when(F.col("plaintext").isNotNull() & size_ok, F.col("value")).otherwise(
        sealed_column(received, F.col("topic"), keys)
    )


def valid_profiles(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("rejection").isNull())


# Kafka refuses a record over the topic's max.message.bytes (1 MiB): a dead letter keeps
# at most this much of a message's key and ``max_message_bytes`` of its value.
MAX_DEAD_LETTER_KEY_BYTES = 256


def rejected_messages(parsed: DataFrame) -> DataFrame:
    """The dead-letter record: the original key, the value encrypted (``_dead_letter_value``;
    ``dlq.value.bytes`` says how long the original was), the reason and origin as headers."""
    header = lambda name, value: F.struct(F.lit(name).alias("key"), value.cast("binary").alias("value"))  # noqa: E731
    return parsed.where(F.col("rejection").isNotNull()).select(
        F.substring("key", 1, MAX_DEAD_LETTER_KEY_BYTES).alias("key"),
        F.col("dead_letter_value").alias("value"),
        F.array(
            header(REASON_HEADER, F.col("rejection")),
            header(SOURCE_TOPIC_HEADER, F.col("topic")),
            header(SOURCE_PARTITION_HEADER, F.col("partition").cast("string")),
            header(SOURCE_OFFSET_HEADER, F.col("offset").cast("string")),
            header(VALUE_BYTES_HEADER, F.coalesce(F.length("value"), F.lit(0)).cast("string")),
        ).alias("headers"),
    )


def with_rejections(prepared: DataFrame, rejections: DataFrame) -> DataFrame:
    """``prepared`` with the messages named in ``rejections`` (topic, partition, offset,
    reason) rejected for that reason: rows a store refused, messages an operator quarantined."""
    named = F.broadcast(rejections.withColumnRenamed("reason", "_named_rejection"))
    return (
        prepared.join(named, ["topic", "partition", "offset"], "left")
        .withColumn("rejection", F.coalesce("rejection", "_named_rejection"))
        .drop("_named_rejection")
    )


def _joined(separator: str, *parts: Column) -> Column:
    """The parts that are present, joined; empty text is absent (concat_ws skips only nulls)."""
    return _blank_to_null(F.concat_ws(separator, *(_blank_to_null(part) for part in parts)))


def _full_name(profile: Column) -> Column:
    return _joined(" ", profile["name"].title, profile["name"].first, profile["name"].last)


def _full_address(profile: Column) -> Column:
    location = profile.location
    street = _joined(" ", location.street.number.cast("string"), location.street["name"])
    return _joined(", ", street, location.city, location.state, location.postcode, location.country)


def _email_domain(email: Column) -> Column:
    normalized = F.lower(F.trim(email))
    return F.when(normalized.contains("@"), _blank_to_null(F.substring_index(normalized, "@", -1)))


def normalized_columns() -> list[Column]:
    """Plain-text working columns of a valid profile. Held in memory only, never stored.

    Dates become UTC timestamps/dates (the session time zone must be UTC, see
    ``jobs.stream.build_spark``); the ``age`` fields and the secrets are not selected.
    """
    profile = F.col("profile")
    registered_at = _iso_timestamp(profile.registered.date)
    return [
        F.lower(profile.login.uuid).alias("user_id"),
        F.upper(profile.nat).alias("nationality"),
        F.coalesce(F.lower(_blank_to_null(profile.gender)), F.lit(UNKNOWN)).alias("gender"),
        _blank_to_null(profile.location.country).alias("country"),
        _full_name(profile).alias("full_name"),
        _full_address(profile).alias("full_address"),
        _blank_to_null(profile.email).alias("email"),
        _email_domain(profile.email).alias("email_domain"),
        _blank_to_null(profile.phone).alias("phone"),
        _blank_to_null(profile.cell).alias("cell"),
        F.to_date(_iso_timestamp(profile.dob.date)).alias("birth_date"),
        registered_at.alias("registered_at"),
        F.col("timestamp").alias("produced_at"),
    ]


def _date_parts(column: str, prefix: str) -> dict[str, Column]:
    return {
        f"{prefix}_year": F.year(column),
        f"{prefix}_month": F.month(column),
        f"{prefix}_day": F.dayofmonth(column),
    }


def encrypt_column(column: str, stored_name: str, keys: KeyRing) -> Column:
    """AES-256-GCM in the JVM; output is the envelope described in ``bdf.keyring``."""
    header = envelope_header(keys.active_key_id)
    sealed = F.aes_encrypt(
        F.col(column),
        F.lit(keys.active_key),
        F.lit("GCM"),
        F.lit("DEFAULT"),
        F.lit(""),  # empty IV: Spark draws a random 12-byte IV per value
        F.lit(associated_data(header, stored_name)),
    )
    return F.concat(F.lit(header), sealed)


def email_pseudonym(column: str, keys: KeyRing) -> Column:
    """HMAC-SHA256 of the normalized email, from two SHA-256 built-ins (RFC 2104)."""
    inner_pad, outer_pad = keys.hmac_pads()
    message = F.encode(F.lower(F.trim(F.col(column))), "UTF-8")
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)


def protected_columns(keys: KeyRing) -> list[Column]:
    """The stored row (``STORED_SCHEMA``) from the normalized columns: personal data
    encrypted, the rest minimised."""
    columns = {
        **{name: F.col(name) for name in ("user_id", "nationality", "gender", "country")},
        **{stored: encrypt_column(plain, stored, keys) for plain, stored in ENCRYPTED_COLUMNS.items()},
        "email_pseudonym": email_pseudonym("email", keys),
        "email_domain": F.col("email_domain"),
        "birth_date": F.col("birth_date"),
        **_date_parts("birth_date", "birth"),
        "registered_at": F.col("registered_at"),
        **_date_parts("registered_at", "registered"),
        "key_id": F.lit(keys.active_key_id),
        "produced_at": F.col("produced_at"),
        "stored_at": F.current_timestamp(),
    }
    assert set(columns) == set(STORED_SCHEMA.fieldNames())
    return [columns[name].alias(name) for name in STORED_SCHEMA.fieldNames()]


DEAD_LETTER_SOURCE_COLUMNS = (
    "key",
    "value",
    "dead_letter_value",
    "topic",
    "partition",
    "offset",
    "rejection",
)


def prepare(messages: DataFrame, keys: KeyRing, max_message_bytes: int) -> DataFrame:
    """Each message once: what a dead letter needs, ``rejection``, and the ``stored`` row.

    The stream job builds this plan once per query: a micro-batch then spends no time
    building the transformation in Python. ``stored`` means nothing where ``rejection``
    is set (see ``stored_rows``).
    """
    parsed = parse_messages(messages, keys, max_message_bytes)
    return parsed.select(*DEAD_LETTER_SOURCE_COLUMNS, *normalized_columns()).select(
        *DEAD_LETTER_SOURCE_COLUMNS, F.struct(*protected_columns(keys)).alias("stored")
    )


def stored_rows(prepared: DataFrame) -> DataFrame:
    return valid_profiles(prepared).select("stored.*")


def aggregate_fact_lines() -> Column:
    """An aggregate expression over ``prepare``'s rows, for ``DataFrame.observe``: what each
    stored row counts under, as JSON lines ``{"user_id", "birth_epoch_day", "keys"}`` (one
    key per collection, in ``AGGREGATE_COLLECTIONS`` order), for ``jobs.sinks.AggregateLedger``.
    No contact data; rejected rows count nothing."""
    stored = F.col("stored")
    keys = [F.coalesce(key.cast("string"), F.lit(UNKNOWN)) for key in _aggregate_keys(stored).values()]
    fact = F.struct(
        stored["user_id"].alias("user_id"),
        F.datediff(stored["birth_date"], F.lit(EPOCH.isoformat()).cast("date")).alias("birth_epoch_day"),
        F.array(*keys).alias("keys"),
    )
    line = F.when(F.col("rejection").isNull(), F.to_json(fact))
    return F.array_join(F.collect_list(line), "\n")
