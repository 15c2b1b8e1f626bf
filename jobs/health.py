"""``python -m jobs.health``: the pipeline's health as one JSON object (used by `make status`).

Messages in the topic (end offsets), rows in Cassandra, and the last micro-batches the
stream job recorded in MongoDB. Reads only; counts only, never personal data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bdf import clients
from bdf.config import Settings, load_credentials, load_settings
from jobs.aggregates import BATCHES_COLLECTION
from jobs.cli_options import config_option
from jobs.sinks import STORE_CLIENT_OPTIONS


def topic_messages(settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    kafka = settings.kafka
    client = clients.kafka_config(kafka, load_credentials(kafka.credentials_file))
    consumer = Consumer(client | {"group.id": f"{kafka.consumer_group_prefix}-health"})
    try:
        partitions = consumer.list_topics(kafka.topic, timeout=10).topics[kafka.topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(kafka.topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def stored_rows(settings: Settings) -> int:
    cassandra = settings.cassandra
    cluster = clients.cassandra_cluster(cassandra, load_credentials(cassandra.credentials_file))
    try:
        session = cluster.connect(cassandra.keyspace)
        return session.execute(f"SELECT count(*) FROM {cassandra.table}", timeout=60).one()[0]  # noqa: S608
    finally:
        cluster.shutdown()


def last_batches(settings: Settings) -> list[dict[str, Any]]:
    mongodb = settings.mongodb
    client = clients.mongo_client(mongodb, load_credentials(mongodb.credentials_file), **STORE_CLIENT_OPTIONS)
    try:
        batches = client[settings.mongodb.database][BATCHES_COLLECTION]
        return [
            {key: value for key, value in doc.items() if key != "_id"}
            for doc in batches.find().sort("at", -1).limit(4)
        ]
    finally:
        client.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
def main(config_path: Path | None) -> None:
    """Print messages in the topic, rows in Cassandra and the last micro-batches as JSON."""
    settings = load_settings(config_path)
    settings.require("kafka", "cassandra", "mongodb")
    report = {
        "messages_in_topic": topic_messages(settings),
        "rows_in_cassandra": stored_rows(settings),
        "last_batches": last_batches(settings),
    }
    click.echo(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
