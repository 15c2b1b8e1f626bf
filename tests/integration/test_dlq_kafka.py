"""bdf-dlq against a real Kafka 4.4 broker with the repository's ACLs (acl/access.yml).

The stream principal writes dead letters the way the job does (original key, the value
sealed as the producer sealed it, dlq.* headers); a data-engineering member counts, lists,
shows (decrypted with the key file, then masked) and replays them with their own
credentials, and the replayed message, still encrypted, is read back from the source topic.
Starts a SASL/SCRAM KRaft node on 127.0.0.1 (tests/kafka_broker.py, `make artifacts`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import (  # noqa: E402 - after the importorskip
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from acl.model import load_description, principal_user  # noqa: E402
from bdf.keyring import new_keyring, save_keyring  # noqa: E402
from jobs.message_crypto import MessageKeys, load_message_keys  # noqa: E402
from tests.factories import generated_profiles  # noqa: E402
from tests.kafka_broker import NEEDS_BROKER, REPO, Broker, password, running_broker  # noqa: E402

SOURCE, DLQ = "user_profiles", "user_profiles_dlq"
UUID_REASON = "login.uuid is not a UUID"
JSON_REASON = "not a JSON object, or a field has the wrong type"
MEMBER = "dana"  # in team data-engineering in acl/access.yml

pytestmark = NEEDS_BROKER


def _apply_repository_acls(broker: Broker) -> None:
    """acl/access.yml's ACLs, created directly (bdf-acl apply itself is tested in test_acl_kafka)."""
    bindings = [
        AclBinding(
            ResourceType[acl.resource_type],
            acl.name,
            ResourcePatternType[acl.pattern],
            acl.principal,
            acl.host,
            AclOperation[acl.operation],
            AclPermissionType[acl.permission],
        )
        for acl in load_description(REPO / "acl" / "access.yml").desired_acls()
    ]
    admin = AdminClient(broker.admin_client_config())  # kept alive until the futures resolve
    for future in admin.create_acls(bindings).values():
        future.result()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    description = load_description(REPO / "acl" / "access.yml")
    users = {principal_user(p): password(principal_user(p)) for p in description.managed_principals()}
    assert f"User:{MEMBER}" in description.teams["data-engineering"].members
    with running_broker(tmp_path_factory.mktemp("kafka"), (SOURCE, DLQ), users) as started:
        _apply_repository_acls(started)
        yield started


def _deliver(producer: confluent_kafka.Producer, topic: str, **message: object) -> tuple[int, int]:
    delivered: list[tuple[int, int]] = []

    def report(error, sent) -> None:
        assert error is None, error
        delivered.append((sent.partition(), sent.offset()))

    producer.produce(topic, on_delivery=report, **message)
    assert producer.flush(30) == 0
    return delivered[0]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "profile-keys.json"
    save_keyring(new_keyring(), path)
    return path


@pytest.fixture(scope="module")
def dead_letters(broker: Broker, key_file: Path) -> list[dict[str, object]]:
    """Poison profiles published (sealed) by the producer, dead-lettered by the stream principal."""
    keys: MessageKeys = load_message_keys(key_file)
    poison = []
    for profile in generated_profiles(2, seed="dlq-integration"):
        profile["login"]["uuid"] += "\n"
        poison.append((profile["login"]["uuid"].encode(), json.dumps(profile).encode(), UUID_REASON))
    poison.append((None, b"{'single': 'quoted'}", JSON_REASON))
    producer = confluent_kafka.Producer(broker.client_config("producer"))
    stream = confluent_kafka.Producer(broker.client_config("stream"))
    letters = []
    for key, plaintext, reason in poison:
        value = keys.seal(plaintext, SOURCE)
        partition, offset = _deliver(producer, SOURCE, key=key, value=value)
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.source.topic", SOURCE.encode()),
            ("dlq.source.partition", str(partition).encode()),
            ("dlq.source.offset", str(offset).encode()),
        ]
        _deliver(stream, DLQ, key=key, value=value, headers=headers)
        letters.append(
            {"key": key, "value": value, "plaintext": plaintext, "reason": reason, "source_offset": offset}
        )
    return letters


@pytest.fixture(scope="module")
def config(broker: Broker, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dlq-config")
    for user in (MEMBER, "stream"):
        credentials = folder / f"kafka-{user}.toml"
        credentials.write_text(f'username = "{user}"\npassword = "{password(user)}"\n')
        credentials.chmod(0o600)
    path = folder / "bdf.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = ["{broker.bootstrap}"]\n'
        f'credentials_file = "{folder / f"kafka-{MEMBER}.toml"}"\n'
        f'[keys]\nkey_file = "{key_file}"\n'
    )
    return path


def bdf_dlq(
    config: Path, *args: str, credentials: str = MEMBER, input: str | None = None
) -> subprocess.CompletedProcess:
    options = [
        "--config",
        str(config),
        "--credentials-file",
        str(config.parent / f"kafka-{credentials}.toml"),
    ]
    options += ["--audit-log", str(config.parent / "dlq-audit.jsonl"), "--timeout", "20"]
    return subprocess.run(  # noqa: S603 - this interpreter, the CLI under test
        [sys.executable, "-m", "jobs.dlq", *options, *args],
        capture_output=True,
        text=True,
        input=input,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=180,
        check=False,
    )


def test_count_and_list_read_every_dead_letter_without_payloads(config, dead_letters):
    counted = bdf_dlq(config, "count", "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {
        "topic": DLQ,
        "total": 3,
        "by_reason": {UUID_REASON: 2, JSON_REASON: 1},
    }
    listed = bdf_dlq(config, "list", "--reason", "uuid", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["entries"]
    assert [(e["offset"], e["source"]["offset"], e["reason"]) for e in entries] == [
        (0, dead_letters[0]["source_offset"], UUID_REASON),
        (1, dead_letters[1]["source_offset"], UUID_REASON),
    ]
    assert b"@" not in listed.stdout.encode()  # no email, no payload at all
    # Reading committed nothing: a second reader (or run) starts from the beginning again.
    assert json.loads(bdf_dlq(config, "count", "--json").stdout)["total"] == 3


def test_show_masks_the_personal_data(config, dead_letters):
    shown = bdf_dlq(config, "show", "0:0", "--json")
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)
    assert (entry["masked"], entry["stored"]) == (True, "encrypted (message key id 1)")
    assert entry["payload"]["value"]["login"]["uuid"].startswith("<text 37: control characters")
    profile = json.loads(dead_letters[0]["plaintext"])
    for secret in (profile["email"], profile["name"]["last"], profile["login"]["uuid"].strip()):
        assert secret not in shown.stdout
        assert secret.encode() not in dead_letters[0]["value"]  # nor in the topic


def test_show_unmask_decrypts_for_the_team_member(config, dead_letters):
    shown = bdf_dlq(config, "show", "0:2", "--unmask", "--json", input="y\n")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["payload"] == dead_letters[2]["plaintext"].decode()


def test_the_stream_principal_may_not_read_the_dead_letters(config, dead_letters):
    refused = bdf_dlq(config, "count", credentials="stream")
    assert refused.returncode == 1
    assert "the principal User:stream may not use user_profiles_dlq" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_replay_publishes_the_original_key_and_bytes_and_audits_it(broker, config, dead_letters):
    dry = bdf_dlq(config, "replay", "0:0", "--dry-run", "--json")
    assert json.loads(dry.stdout)["replay"] == ["0:0"], dry.stderr

    replayed = bdf_dlq(config, "replay", "0:0", "--yes", "--json")
    assert replayed.returncode == 0, replayed.stderr
    (result,) = json.loads(replayed.stdout)["results"]
    assert result["from"] == "0:0" and result["offset"] == len(dead_letters)

    consumer = confluent_kafka.Consumer(
        {**broker.client_config("stream"), "group.id": "user-profiles-stream-check"}
    )
    consumer.assign([confluent_kafka.TopicPartition(SOURCE, result["partition"], result["offset"])])
    try:
        message = consumer.poll(30)
    finally:
        consumer.close()
    assert message is not None and message.error() is None
    assert (message.key(), message.value()) == (dead_letters[0]["key"], dead_letters[0]["value"])
    assert not message.headers()  # the dlq.* headers stay in the dead-letter topic

    audit_log = config.parent / "dlq-audit.jsonl"
    lines = [json.loads(text) for text in audit_log.read_text().splitlines()]
    (line,) = [line for line in lines if line["action"] != "dlq_unmask"]
    assert line["action"] == "dlq_replay"
    assert (line["principal"], line["dlq_topic"], line["dlq_offset"]) == (MEMBER, DLQ, 0)
    assert (line["to_topic"], line["to_offset"]) == (SOURCE, result["offset"])
    profile = json.loads(dead_letters[0]["plaintext"])
    assert profile["email"] not in audit_log.read_text()
    assert profile["login"]["uuid"].strip() not in audit_log.read_text()

    again = bdf_dlq(config, "replay", "0:0", "--yes", "--json")
    assert json.loads(again.stdout)["skipped_already_replayed"] == ["0:0"], again.stderr
