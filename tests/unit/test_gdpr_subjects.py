"""Subject access and erasure against an in-memory profile table and aggregate database.

Rows are built like the stream job's (``jobs.transform.protected_columns``): the same envelope
(``KeyRing.encrypt``), the same pseudonym; the real table is exercised on the lab by
tests/integration/test_subject_rights.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bdf.keyring import KeyRing, envelope_header, new_keyring, save_keyring
from gdpr import cli
from gdpr.model import load_register
from gdpr.purge import PurgeError, purge_table, snapshots_of
from gdpr.subjects import access_export, check_aggregates, decrypted_row, erase_rows, find_rows
from tests.factories import generated_profiles

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def stored_row(profile: dict[str, Any], keys: KeyRing) -> dict[str, Any]:
    """What the stream job stores for a profile, as the Cassandra driver returns it."""
    name, location = profile["name"], profile["location"]
    street = f"{location['street']['number']} {location['street']['name']}"
    address = ", ".join(
        [street, location["city"], location["state"], str(location["postcode"]), location["country"]]
    )
    birth = dt.datetime.fromisoformat(profile["dob"]["date"].replace("Z", "+00:00"))
    registered = dt.datetime.fromisoformat(profile["registered"]["date"].replace("Z", "+00:00"))
    return {
        "user_id": uuid.UUID(profile["login"]["uuid"]),
        "nationality": profile["nat"],
        "gender": profile["gender"],
        "country": location["country"],
        "full_name_enc": keys.encrypt(f"{name['title']} {name['first']} {name['last']}", "full_name_enc"),
        "address_enc": keys.encrypt(address, "address_enc"),
        "email_enc": keys.encrypt(profile["email"], "email_enc"),
        "phone_enc": keys.encrypt(profile["phone"], "phone_enc"),
        "cell_enc": keys.encrypt(profile["cell"], "cell_enc"),
        "email_pseudonym": keys.pseudonym(profile["email"]),
        "email_domain": profile["email"].split("@")[1].lower(),
        "birth_date": birth.date(),
        "birth_year": birth.year,
        "birth_month": birth.month,
        "birth_day": birth.day,
        "registered_at": registered.replace(tzinfo=None),
        "registered_year": registered.year,
        "registered_month": registered.month,
        "registered_day": registered.day,
        "key_id": keys.active_key_id,
        "produced_at": registered.replace(tzinfo=None),
        "stored_at": registered.replace(tzinfo=None),
        "ttl_seconds": 3600,
    }


class FakeTable:
    """The profile table: lookups by pseudonym (the SAI index) and by primary key only."""

    name = "user_profiles.profiles"

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {row["user_id"]: row for row in rows}
        self.deleted: list[uuid.UUID] = []

    def by_pseudonym(self, pseudonym: str) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows.values() if row["email_pseudonym"] == pseudonym]

    def by_user_id(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        return [dict(self.rows[user_id])] if user_id in self.rows else []

    def delete(self, user_id: uuid.UUID) -> None:
        self.deleted.append(user_id)
        self.rows.pop(user_id, None)


class FakeCollection:
    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents

    def find(self) -> list[dict[str, Any]]:
        return list(self.documents)

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return next((d for d in self.documents if d["_id"] == query["_id"]), None)


class FakeDatabase(dict):
    def list_collection_names(self) -> list[str]:
        return list(self)


@pytest.fixture()
def profiles() -> list[dict[str, Any]]:
    return generated_profiles(4, seed="gdpr-subjects")


@pytest.fixture()
def table(profiles, keys) -> FakeTable:
    return FakeTable([stored_row(profile, keys) for profile in profiles])


def aggregates(profiles: list[dict[str, Any]]) -> FakeDatabase:
    domains: dict[str, int] = {}
    for profile in profiles:
        domain = profile["email"].split("@")[1].lower()
        domains[domain] = domains.get(domain, 0) + 1
    return FakeDatabase(
        email_domains=FakeCollection(
            [{"_id": d, "users": n, "birth_epoch_day_sum": 1} for d, n in domains.items()]
        ),
        users_by_nationality=FakeCollection([{"_id": p["nat"], "users": 1} for p in profiles]),
        totals=FakeCollection([{"_id": "all", "users": len(profiles)}]),
    )


# --- access ---------------------------------------------------------------------------------------


def test_subject_is_found_by_the_keyed_pseudonym_of_the_email_in_any_case(table, profiles, keys):
    email = profiles[1]["email"]
    rows = find_rows(table, keys.pseudonym(f"  {email.upper()} "))
    assert [row["user_id"] for row in rows] == [uuid.UUID(profiles[1]["login"]["uuid"])]


def test_access_export_decrypts_every_encrypted_column_and_keeps_the_rest(table, profiles, keys):
    profile = profiles[2]
    pseudonym = keys.pseudonym(profile["email"])
    export = access_export(find_rows(table, pseudonym), keys, pseudonym, load_register(), now=NOW)

    assert export["email_pseudonym"] == pseudonym
    [row] = export["profiles"]
    name = profile["name"]
    assert row["full_name"] == f"{name['title']} {name['first']} {name['last']}"
    assert row["address"].startswith(f"{profile['location']['street']['number']} ")
    assert (row["email"], row["phone"], row["cell"]) == (profile["email"], profile["phone"], profile["cell"])
    assert row["user_id"] == profile["login"]["uuid"]
    assert row["birth_date"] == profile["dob"]["date"][:10]
    assert row["registered_at"] == profile["registered"]["date"]
    assert row["expires_at"] == "2026-01-02T04:04:05.000Z"
    assert not any(column.endswith("_enc") for column in row)
    json.dumps(export)  # JSON all the way down


def test_access_export_tells_the_purposes_recipients_and_time_limits(table, profiles, keys):
    export = access_export([], keys, "p", load_register(), now=NOW)
    processing = export["processing"]
    assert export["profiles"] == []
    assert processing["purposes"] and processing["recipients"] and processing["rights"]
    assert any("3 years" in period for period in processing["storage_periods"].values())
    assert {c["copy"] for c in processing["copies_outside_the_profile_store"]} >= {
        "Raw message in the Kafka topic user_profiles"
    }


def test_value_under_a_key_no_longer_in_the_key_file_is_named_not_decryptable(table, profiles, keys):
    row = table.by_pseudonym(keys.pseudonym(profiles[0]["email"]))[0]
    retired = new_keyring().encrypt("000", "phone_enc")
    row["phone_enc"] = envelope_header(9) + retired[3:]  # made under key id 9, since removed
    profile = decrypted_row(row, keys, NOW)
    assert profile["phone"] is None
    assert profile["not_decryptable"] == {"phone": "key id 9 is not in the key file"}
    assert profile["email"] == profiles[0]["email"]


def test_rows_given_by_user_id_are_added_once(table, profiles, keys):
    first, second = (uuid.UUID(p["login"]["uuid"]) for p in profiles[:2])
    rows = find_rows(table, keys.pseudonym(profiles[0]["email"]), [first, second, second])
    assert sorted(row["user_id"] for row in rows) == sorted([first, second])


# --- erasure --------------------------------------------------------------------------------------


def test_erasure_deletes_the_subjects_rows_only_and_finds_nothing_afterwards(table, profiles, keys):
    pseudonym = keys.pseudonym(profiles[3]["email"])
    others = {uid: dict(row) for uid, row in table.rows.items() if row["email_pseudonym"] != pseudonym}

    erasure = erase_rows(table, find_rows(table, pseudonym), pseudonym)

    assert (erasure.rows_found, erasure.rows_deleted, erasure.rows_remaining) == (1, 1, 0)
    assert table.deleted == [uuid.UUID(profiles[3]["login"]["uuid"])]
    assert table.rows == others


def test_aggregates_without_per_person_documents_have_nothing_to_erase(profiles, keys):
    profile = profiles[0]
    needles = [profile["email"], keys.pseudonym(profile["email"]), profile["login"]["uuid"]]
    result = check_aggregates(aggregates(profiles), needles, profile["email"].split("@")[1]).as_dict()
    assert result["documents_naming_the_subject"] == 0
    assert result["personal_data_to_erase"] is False
    assert result["documents_scanned"] > 0


def test_aggregate_document_naming_the_subject_is_reported(profiles, keys):
    database = aggregates(profiles)
    database["leak"] = FakeCollection([{"_id": "x", "who": profiles[0]["email"].upper()}])
    result = check_aggregates(database, [profiles[0]["email"]], None).as_dict()
    assert result["documents_naming_the_subject"] == 1
    assert result["personal_data_to_erase"] is True


def test_email_domain_counted_for_few_people_is_flagged_as_a_small_group(profiles):
    domain = profiles[0]["email"].split("@")[1].lower()
    result = check_aggregates(aggregates(profiles[:1]), ["nobody"], domain).as_dict()
    assert result["email_domain_users"] == 1
    assert result["email_domain_group_is_small"] is True


# --- purge -------------------------------------------------------------------------------------------


LISTING = """Snapshot Details:
Snapshot name Keyspace name Column family name True size Size on disk Creation time Expiration time
truncated-1   user_profiles profiles           1.2 MiB   1.2 MiB      2026-01-01T00:00:00Z
other         system_auth   roles              1 KiB     1 KiB        2026-01-01T00:00:00Z
"""


def test_purge_flushes_then_garbage_collects_the_table_and_lists_its_snapshots():
    calls: list[list[str]] = []

    def runner(argv):
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, LISTING if argv[-1] == "listsnapshots" else "", "")

    result = purge_table("sudo -u cassandra nodetool", "user_profiles", "profiles", runner)
    assert calls == [
        ["sudo", "-u", "cassandra", "nodetool", "flush", "user_profiles", "profiles"],
        [
            "sudo",
            "-u",
            "cassandra",
            "nodetool",
            "garbagecollect",
            "--granularity",
            "ROW",
            "user_profiles",
            "profiles",
        ],
        ["sudo", "-u", "cassandra", "nodetool", "listsnapshots"],
    ]
    assert result.snapshots == ("truncated-1",)


def test_purge_failure_names_the_step_and_the_reason():
    def runner(argv):
        failed = "garbagecollect" in argv
        return subprocess.CompletedProcess(
            argv, 1 if failed else 0, "", "error: JMX refused" if failed else ""
        )

    with pytest.raises(PurgeError, match="nodetool garbagecollect failed: error: JMX refused"):
        purge_table("nodetool", "user_profiles", "profiles", runner)


def test_no_snapshot_listed_when_there_are_none():
    assert snapshots_of("Snapshot Details: \nThere are no snapshots\n", "user_profiles", "profiles") == ()


# --- the commands ----------------------------------------------------------------------------------


@pytest.fixture()
def config(tmp_path, keys) -> Path:
    save_keyring(keys, tmp_path / "keys.json")
    credentials = tmp_path / "cassandra.toml"
    credentials.write_text('username = "app"\npassword = "generated-in-test"\n')
    os.chmod(credentials, 0o600)
    path = tmp_path / "bigdataflow.toml"
    path.write_text(
        f'[cassandra]\nhosts = ["127.0.0.1"]\ncredentials_file = "{credentials}"\n\n'
        f'[keys]\nkey_file = "{tmp_path / "keys.json"}"\n'
    )
    return path


@pytest.fixture()
def fake_store(monkeypatch, table):
    @contextmanager
    def profiles(_settings) -> Iterator[FakeTable]:
        yield table

    monkeypatch.setattr(cli, "cassandra_profiles", profiles)
    return table


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli.main, list(args), input=input)


def test_access_command_prints_the_decrypted_profile_and_logs_no_personal_data(config, fake_store, profiles):
    email = profiles[1]["email"]
    result = run("subject", "access", "--email", email, "--config", str(config))
    assert result.exit_code == 0, result.output
    export = json.loads(result.stdout)
    assert [p["email"] for p in export["profiles"]] == [email]
    assert email not in result.stderr and export["email_pseudonym"] not in result.stderr
    assert json.loads(result.stderr.splitlines()[-1])["rows"] == 1


def test_access_command_asks_for_the_email_when_not_given(config, fake_store, profiles):
    result = run("subject", "access", "--config", str(config), input=profiles[0]["email"] + "\n")
    assert result.exit_code == 0, result.output
    assert (
        json.loads(result.stdout[result.stdout.index("{") :])["profiles"][0]["email"] == profiles[0]["email"]
    )


def test_erase_command_asks_first_and_deletes_nothing_when_refused(config, fake_store, profiles, tmp_path):
    audit = tmp_path / "erasures.jsonl"
    args = [
        "subject",
        "erase",
        "--email",
        profiles[0]["email"],
        "--config",
        str(config),
        "--audit-log",
        str(audit),
    ]
    result = run(*args, input="n\n")
    assert result.exit_code == 1
    assert "1 profile row(s) of this person" in result.output and "Aborted" in result.output
    assert fake_store.deleted == []
    assert not audit.exists()


def test_erase_command_deletes_prints_counts_and_logs_the_pseudonym_never_the_email(
    config, fake_store, profiles, keys, tmp_path
):
    email = profiles[0]["email"]
    audit = tmp_path / "erasures.jsonl"
    args = ["subject", "erase", "--email", email, "--yes", "--config", str(config), "--audit-log", str(audit)]
    result = run(*args)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows_found"], summary["rows_deleted"], summary["rows_remaining"]) == (1, 1, 0)
    assert summary["aggregates"] == {"checked": False, "reason": "no [mongodb] section in the configuration"}
    assert "Raw message in the Kafka topic user_profiles" in {c["copy"] for c in summary["remaining_copies"]}
    [entry] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert entry["action"] == "erasure"
    assert entry["email_pseudonym"] == keys.pseudonym(email)
    assert entry["rows_deleted"] == 1
    for text in (audit.read_text(), result.stderr):
        assert email not in text and email.split("@")[0] not in text
    assert keys.pseudonym(email) not in result.stderr


def test_erase_command_checks_the_aggregates_when_mongodb_is_configured(
    config, fake_store, profiles, tmp_path, monkeypatch
):
    credentials = tmp_path / "mongo.toml"
    credentials.write_text('username = "stream"\npassword = "generated-in-test"\n')
    os.chmod(credentials, 0o600)
    with config.open("a") as handle:
        handle.write(f'\n[mongodb]\nhosts = ["127.0.0.1:27017"]\ncredentials_file = "{credentials}"\n')

    @contextmanager
    def database(_settings):
        yield aggregates(profiles)

    monkeypatch.setattr(cli, "mongo_database", database)
    audit = tmp_path / "erasures.jsonl"
    args = ["subject", "erase", "--email", profiles[0]["email"], "--yes", "--config", str(config)]
    result = run(*args, "--audit-log", str(audit))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["aggregates"]["personal_data_to_erase"] is False


def test_erase_command_with_purge_reports_a_failed_nodetool_after_logging_the_erasure(
    config, fake_store, profiles, tmp_path
):
    audit = tmp_path / "erasures.jsonl"
    args = ["subject", "erase", "--email", profiles[0]["email"], "--yes", "--purge", "--config", str(config)]
    result = run(*args, "--nodetool", str(tmp_path / "no-nodetool"), "--audit-log", str(audit))
    assert result.exit_code == 1
    assert "rows deleted, but the purge failed" in result.output
    assert json.loads(audit.read_text())["rows_deleted"] == 1


def test_erase_command_refuses_an_unwritable_audit_log_before_deleting(
    config, fake_store, profiles, tmp_path
):
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["subject", "erase", "--email", profiles[0]["email"], "--yes", "--config", str(config)]
    result = run(*args, "--audit-log", str(blocker / "erasures.jsonl"))
    assert result.exit_code == 1
    assert "cannot write the audit log" in result.output
    assert fake_store.deleted == []


def test_verify_erasures_reports_a_person_stored_again(config, fake_store, profiles, keys, tmp_path):
    audit = tmp_path / "erasures.jsonl"
    email = profiles[0]["email"]
    row = fake_store.by_pseudonym(keys.pseudonym(email))[0]
    run("subject", "erase", "--email", email, "--yes", "--config", str(config), "--audit-log", str(audit))

    result = run("subject", "verify-erasures", "--config", str(config), "--audit-log", str(audit))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"erasures_checked": 1, "found_again": []}

    fake_store.rows[row["user_id"]] = row  # e.g. a backup restored, or the topic replayed
    result = run("subject", "verify-erasures", "--config", str(config), "--audit-log", str(audit))
    assert result.exit_code == 1
    assert "1 erased person(s) are stored again" in result.output


def test_missing_configuration_section_is_one_clear_message(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    result = run("subject", "access", "--email", "someone@example.test", "--config", str(path))
    assert result.exit_code == 1
    assert "missing section(s) [cassandra], [keys]" in result.output
    assert "Traceback" not in result.output
