"""Build Kafka-shaped DataFrames (key, value, topic, partition, offset, timestamp) in tests."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from bdf.keyring import KeyRing
from jobs.message_crypto import MessageKeys

KAFKA_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
    ]
)
PRODUCED_AT = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def encode(value: Any) -> bytes | None:
    """dicts become JSON (non-ASCII kept as UTF-8), strings their UTF-8 bytes."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def sealed(keys: KeyRing, value: Any, topic: str = "user_profiles") -> bytes | None:
    """``value`` as the producer publishes it: encoded, then sealed under the message key."""
    raw = encode(value)
    return None if raw is None else MessageKeys.of(keys).seal(raw, topic)


def kafka_frame(
    spark: SparkSession, values: list[Any], keys: KeyRing | None, topic: str = "user_profiles"
) -> DataFrame:
    """One message per value, sealed as the producer does; ``keys=None``: the bytes as given
    (what an old or foreign producer sends)."""
    rows = []
    for offset, value in enumerate(values):
        key = value.get("login", {}).get("uuid") if isinstance(value, dict) else None
        payload = encode(value) if keys is None else sealed(keys, value, topic)
        rows.append((encode(key), payload, topic, 0, offset, PRODUCED_AT))
    return spark.createDataFrame(rows, KAFKA_SCHEMA)
