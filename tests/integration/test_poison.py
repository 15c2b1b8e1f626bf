"""Poison messages on the deployed lab, between valid profiles, through the real pipeline.

The job must not restart (``NRestarts`` unchanged), every valid profile is stored, every
poison message is a dead letter with its reason, the aggregates grow by an independent
count of the valid ones only, and the dashboard still renders in Chromium.
"""

from __future__ import annotations

import json
import uuid

import pytest

from jobs.contract import GENDERS, NATIONALITIES
from jobs.message_crypto import MessageKeys
from tests.factories import generated_profiles
from tests.factories import with_value as _with
from tests.lab import (
    CA_FILE,
    DASHBOARD_HOST,
    DASHBOARD_URL,
    HOSTS,
    LAB_ONLY,
    PRODUCER_HOST,
    STREAM_HOST,
    TLS,
    TOPIC,
    aggregate_counts,
    aggregates_match_cassandra,
    dead_letters,
    eventually,
    kafka_conf,
    message_keys,
    restarts,
    sealed,
    settled,
    ssh,
    stored_of,
)
from tests.tls import chromium_trust_flags

pytestmark = LAB_ONLY
STREAM_UNIT = "user-profiles-stream"


def _poison(base: dict) -> dict[str, tuple[bytes, bytes, str]]:
    """Each poison message seen on the lab (and a few more): (plaintext, the bytes published,
    the reason it must get). The contract's poison is sealed by the producer's own helper;
    the rest cannot be opened (an old producer's plain JSON, a retired or foreign key, a
    value sealed for another topic, a tampered one)."""
    fresh = _with(base, "login.uuid", str(uuid.uuid4()))
    as_json = lambda profile: json.dumps(profile, ensure_ascii=False).encode()  # noqa: E731
    contract = {
        "uuid-newline": (
            as_json(_with(fresh, "login.uuid", str(uuid.uuid4()) + "\n")),
            "login.uuid: longer than",
        ),
        "long-nat": (as_json(_with(fresh, "nat", "F" * 20_000)), "nat: longer than 2 characters"),
        "gender-object": (as_json(_with(fresh, "gender", {"a": 1})), "gender: must be text, not an object"),
        "born-2999": (
            as_json(_with(fresh, "dob.date", "2999-01-01T00:00:00.000Z")),
            "dob.date: in the future",
        ),
        "email-number": (as_json(_with(fresh, "email", 12345)), "email: must be text, not a number"),
        "not-json": (b"this is not json", "message: not valid JSON"),
        "bad-utf8": (as_json(fresh)[:-2] + b'\xff"}', "message: not valid UTF-8"),
        "trailing-junk": (as_json(fresh) + b"}", "message: not valid JSON"),
        "unknown-nat": (as_json(_with(fresh, "nat", "ZZ")), "nat: not one of the allowed values"),
    }
    plain = as_json(_with(fresh, "login.uuid", str(uuid.uuid4())))
    foreign_key = MessageKeys(0xFFFE, {0xFFFE: bytes(32)}).seal(plain, TOPIC)
    tampered = bytearray(sealed(plain))
    tampered[-1] ^= 0x01
    return {
        **{name: (value, sealed(value), reason) for name, (value, reason) in contract.items()},
        "plain-json": (plain, plain, "message: not encrypted"),
        "unknown-key-id": (plain, foreign_key, "message: unknown key id 65534"),
        "other-topic": (plain, sealed(plain, "another_topic"), "message: cannot be decrypted"),
        "tampered": (plain, bytes(tampered), "message: cannot be decrypted"),
    }


def _valid_uuid_poison(markers: dict) -> list[tuple[bytes, str]]:
    """The poison messages that are JSON objects with a canonical login.uuid: never stored."""
    chosen = []
    for value, _published, reason in markers.values():
        try:
            profile = json.loads(value)
            uuid.UUID(profile["login"]["uuid"])
        except (ValueError, KeyError, TypeError):
            continue
        if len(profile["login"]["uuid"]) == 36:
            chosen.append((value, reason))
    return chosen


def test_poison_messages_become_dead_letters_and_nothing_else_changes(cassandra, mongo):
    from confluent_kafka import Producer

    run = uuid.uuid4().hex[:8]
    valid = generated_profiles(200, seed=f"poison-{run}")
    poison = _poison(valid[0])
    markers = {f"poison-{run}-{name}".encode(): entry for name, entry in poison.items()}

    assert ssh(PRODUCER_HOST, "systemctl stop bdf-producer").returncode == 0
    try:
        settled(mongo)
        restarts_before = restarts(STREAM_HOST, STREAM_UNIT)

        producer = Producer(kafka_conf("producer") | {"acks": "all", "enable.idempotence": True})
        poisons = list(markers.items())
        for index, profile in enumerate(valid):
            producer.produce(TOPIC, key=profile["login"]["uuid"].encode(), value=sealed(json.dumps(profile)))
            if index % 20 == 10 and poisons:
                marker, (_, published, _) = poisons.pop()
                producer.produce(TOPIC, key=marker, value=published)
        for marker, (_, published, _) in poisons:
            producer.produce(TOPIC, key=marker, value=published)
        assert producer.flush(60) == 0

        letters = dead_letters(set(markers), 180)
        assert set(letters) == set(markers), "some poison messages never reached the dead-letter topic"
        for marker, (headers, value) in letters.items():
            plaintext, published, reason = markers[marker]
            assert reason in headers["dlq.reason"], (marker, headers["dlq.reason"])
            assert headers["dlq.source.topic"] == TOPIC
            # Encrypted like the raw topic: the original envelope, else what arrived sealed again.
            opened = message_keys().open(value, TOPIC)
            assert opened in (plaintext, published), marker
            assert plaintext[:40] not in value, marker

        ids = [uuid.UUID(profile["login"]["uuid"]) for profile in valid]
        eventually(
            lambda: stored_of(cassandra, ids) == len(ids) or None, 180, "every valid profile in Cassandra"
        )

        poisoned_ids = [
            uuid.UUID(json.loads(value)["login"]["uuid"]) for value, _ in _valid_uuid_poison(markers)
        ]
        assert stored_of(cassandra, poisoned_ids) == 0, "a poison message was stored"
        aggregates_match_cassandra(cassandra, mongo)
        assert set(aggregate_counts(mongo, "users_by_nationality")) <= set(NATIONALITIES)
        assert set(aggregate_counts(mongo, "users_by_gender")) <= {*GENDERS, "unknown"}

        assert restarts(STREAM_HOST, STREAM_UNIT) == restarts_before, "the stream job restarted"
        assert ssh(STREAM_HOST, f"systemctl is-active {STREAM_UNIT}").stdout.strip() == "active"
    finally:
        ssh(PRODUCER_HOST, "systemctl start bdf-producer")


def test_dashboard_renders_in_chromium_without_console_errors():
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from dashboard import demo, ids

    options = webdriver.ChromeOptions()
    if demo.chromium():
        options.binary_location = demo.chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if TLS:  # Chromium takes no CA file: the lab CA verifies the certificate first
        for flag in chromium_trust_flags(HOSTS[DASHBOARD_HOST], 8050, CA_FILE):
            options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(DASHBOARD_URL)
        users = WebDriverWait(driver, 60).until(
            expected_conditions.presence_of_element_located((By.ID, ids.KPI_USERS))
        )
        WebDriverWait(driver, 60).until(lambda _: users.text.replace(",", "").strip().isdigit())
        assert int(users.text.replace(",", "")) > 0
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _stream_job_is_running():
    assert ssh(STREAM_HOST, f"systemctl is-active {STREAM_UNIT}").stdout.strip() == "active"
