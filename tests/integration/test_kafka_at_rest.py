"""No readable personal data in Kafka: the raw topic and the dead-letter topic, byte by byte.

The deployed bdf-producer publishes profiles of a known seed (the offline source is
reproducible), this test publishes a few more that the job must dead-letter (a contract
violation, plain JSON from an "old producer"), then a real consumer reads every record of
both topics and looks for the profiles' names, emails, phones and streets, as bytes, in
values, keys and headers (tests/lab.py personal_needles). Needles are long (an email, a
JSON field, a value of 8 bytes or more), so ciphertext cannot hold one by chance.
"""

from __future__ import annotations

import json
import uuid

from jobs.randomuser_server import generate_users
from tests.factories import generated_profiles
from tests.factories import with_value as _with
from tests.lab import (
    DLQ,
    LAB_ONLY,
    PRODUCER_HOST,
    TOPIC,
    eventually,
    kafka_conf,
    needle_pattern,
    personal_needles,
    sealed,
    ssh,
)

pytestmark = LAB_ONLY
VENV = "/opt/bigdataflow/venv"


def _every_record(topic: str) -> list:
    """Every record of ``topic`` now, read as the admin with assigned partitions."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(kafka_conf("admin") | {"group.id": f"at-rest-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends, starts = {}, []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        records = []
        while ends:
            message = consumer.poll(10)
            assert message is not None, f"{topic}: no answer while reading"
            if message.error() is None and message.partition() in ends:
                records.append(message)
                if message.offset() >= ends[message.partition()] - 1:
                    del ends[message.partition()]
        return records
    finally:
        consumer.close()


def _holding(records: list, needles: set[bytes]) -> list[str]:
    """Positions of the records whose value, key or a header holds one of ``needles``."""
    pattern = needle_pattern(needles)
    found = []
    for record in records:
        fields = [record.value() or b"", record.key() or b""]
        fields += [value or b"" for _, value in record.headers() or ()]
        if any(pattern.search(field) for field in fields):
            found.append(f"{record.topic()}:{record.partition()}:{record.offset()}")
    return found


def test_no_name_or_email_of_a_produced_profile_is_readable_in_either_topic():
    from confluent_kafka import Producer

    run = uuid.uuid4().hex[:8]
    seed, count, batch = f"at-rest-{run}", 300, 100
    overrides = f"BDF__PRODUCER__SEED={seed} BDF__PRODUCER__BATCH_SIZE={batch}"
    result = ssh(
        PRODUCER_HOST,
        f"env {overrides} {VENV}/bin/bdf-producer --config /etc/bigdataflow/producer.toml --count {count}",
    )
    assert result.returncode == 0, result.stderr[-500:]
    produced = [user for page in (1, 2, 3) for user in generate_users(batch, seed, page)]

    poisoned = generated_profiles(2, seed=f"at-rest-poison-{run}")
    markers = {f"at-rest-{run}-{n}".encode() for n in range(2)}
    too_long = _with(poisoned[0], "nat", "F" * 100)  # a contract violation: dead-lettered as sealed
    producer = Producer(kafka_conf("producer") | {"acks": "all", "enable.idempotence": True})
    first, second = sorted(markers)
    producer.produce(TOPIC, key=first, value=sealed(json.dumps(too_long)))
    producer.produce(TOPIC, key=second, value=json.dumps(poisoned[1]).encode())  # an old producer's
    assert producer.flush(60) == 0

    def dead_lettered():
        return {record.key() for record in _every_record(DLQ)} >= markers or None

    eventually(dead_lettered, 240, "both poison messages in the dead-letter topic")
    raw, dead = _every_record(TOPIC), _every_record(DLQ)
    assert len(raw) >= count and len(dead) >= 2
    # The plain poison message is the one readable record: the job seals it as a dead letter.
    assert _holding(dead, personal_needles(poisoned)) == []
    assert _holding([r for r in raw if r.key() != second], personal_needles(produced + poisoned[:1])) == []
    assert _holding([r for r in raw if r.key() == second], personal_needles(poisoned[1:])), (
        "the check sees plain text"
    )
