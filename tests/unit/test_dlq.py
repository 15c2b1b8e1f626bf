"""bdf-dlq without a broker: masking, reason counts, offsets, and the commands on a fake topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from acl.model import load_description
from bdf.keyring import new_keyring, save_keyring
from jobs import dlq
from jobs.dlq import (
    DeadLetter,
    count_reasons,
    describe_text,
    mask_json,
    mask_payload,
    parse_position,
    parse_source_position,
)
from jobs.message_crypto import NOT_ENCRYPTED, MessageKeys
from jobs.quarantine import load_quarantine
from tests.factories import generated_profiles, leaf_values

REPO = Path(__file__).resolve().parents[2]
UUID_REASON = "login.uuid is not a UUID"
JSON_REASON = "not a JSON object, or a field has the wrong type"


def poison_profile() -> dict[str, Any]:
    """A generated profile whose login.uuid ends with a newline (the crash of issue 11)."""
    (profile,) = generated_profiles(1, seed="dlq-unit")
    profile["login"]["uuid"] += "\n"
    return profile


def letter(
    offset: int,
    reason: str,
    value: bytes | None = b"{}",
    source_topic: str = "user_profiles",
    partition: int = 0,
    extra_headers: tuple[tuple[str, bytes | None], ...] = (),
) -> DeadLetter:
    headers = (
        ("dlq.reason", reason.encode()),
        ("dlq.source.topic", source_topic.encode()),
        ("dlq.source.partition", b"0"),
        ("dlq.source.offset", str(1000 + offset).encode()),
        *extra_headers,
    )
    return DeadLetter(partition, offset, 1_795_000_000_000, b"synthetic-key", value, headers)


# --- pure parts ---------------------------------------------------------------------------------


def test_positions_are_parsed_and_anything_else_is_refused_with_an_example():
    assert parse_position("0:1209") == (0, 1209)
    assert parse_source_position("user_profiles:2:17") == ("user_profiles", 2, 17)
    for wrong in ("0", "0:-1", "a:1", "0:1:2", ""):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            parse_position(wrong)
    for wrong in ("0:1", "user:profiles:0:1", "user_profiles:0:x"):
        with pytest.raises(ValueError, match="TOPIC:PARTITION:OFFSET"):
            parse_source_position(wrong)


def test_reasons_are_counted_most_frequent_first():
    letters = [letter(0, UUID_REASON), letter(1, JSON_REASON), letter(2, UUID_REASON)]
    assert count_reasons(letters) == {UUID_REASON: 2, JSON_REASON: 1}
    assert count_reasons([DeadLetter(0, 0, None, None, None)]) == {"(no dlq.reason header)": 1}


def test_summary_says_where_from_and_why_but_holds_neither_key_nor_payload():
    entry = letter(5, UUID_REASON, value=b'{"email": "synthetic@example.invalid"}').summary()
    assert entry == {
        "partition": 0,
        "offset": 5,
        "timestamp": "2026-11-18T11:06:40.000Z",
        "source": {"topic": "user_profiles", "partition": 0, "offset": 1005},
        "reason": UUID_REASON,
        "bytes": 38,
    }


def test_masked_payload_keeps_the_structure_and_hides_every_personal_value():
    profile = poison_profile()
    masked = mask_payload(json.dumps(profile).encode())
    assert masked["format"] == "JSON"
    assert set(masked["value"]) == set(profile)
    assert masked["value"]["login"]["uuid"] == "<text 37: control characters, surrounding whitespace>"
    assert masked["value"]["gender"] == profile["gender"]
    assert masked["value"]["nat"] == profile["nat"]
    text = json.dumps(masked)
    for path, value in leaf_values(profile):
        if path not in ("gender", "nat") and isinstance(value, str) and len(value) > 3:
            assert value not in text, path
    assert masked["value"]["dob"]["age"] == "<number>"


def test_keys_that_could_carry_data_and_hostile_codes_are_masked_too():
    masked = mask_json({"nat": "x" * 20_000, "gender": {"a": 1}, "synthetic.person@example.invalid": True})
    assert masked == {"nat": "<text 20000>", "gender": {"a": "<number>"}, "<text 32>": True}
    assert describe_text("Zoë ") == "<text 4: non-ASCII, surrounding whitespace>"
    assert mask_json([1] * 60)[-1] == "<10 more items>"


def test_non_json_payloads_show_their_size_and_a_masked_head():
    assert mask_payload(b"{'name': 'Sam'}") == {
        "format": "not JSON",
        "bytes": 15,
        "json_error": "Expecting property name enclosed in double quotes",
        "head": "7b 27 ** ** ** ** 27 3a 20 27 ** ** ** 27 7d",
    }
    not_utf8 = mask_payload(b'{"a": "\xff\xfe"}')
    assert not_utf8["format"] == "not UTF-8" and not_utf8["first_invalid_byte"] == 7
    assert mask_payload(b"[" * 100_000)["json_error"] == "nested too deep"
    assert mask_payload(None) == {"format": "none", "bytes": 0}


def test_replay_headers_leave_out_the_jobs_dlq_headers():
    dead = letter(0, UUID_REASON, extra_headers=(("traceparent", b"00-synthetic"),))
    assert dead.replay_headers() == [("traceparent", b"00-synthetic")]


def test_the_consumer_group_prefix_is_the_one_the_acl_grants_the_team():
    team = load_description(REPO / "acl" / "access.yml").teams["data-engineering"]
    groups = {grant.name for grant in team.grants if grant.resource_type == "GROUP"}
    assert dlq.GROUP_PREFIX in groups


# --- the commands on a fake topic ---------------------------------------------------------------


class FakeTopic:
    topic = "user_profiles_dlq"
    principal = "dana"

    def __init__(self, letters: list[DeadLetter]) -> None:
        self.letters = letters

    def scan(self):
        return iter(self.letters)

    def fetch(self, partition: int, offset: int) -> DeadLetter:
        for candidate in self.letters:
            if (candidate.partition, candidate.offset) == (partition, offset):
                return candidate
        raise dlq.DlqError(f"{self.topic} has no message at {partition}:{offset}")

    def close(self) -> None:
        pass


class FakeReplayer:
    principal = "dana"

    def __init__(self) -> None:
        self.published: list[tuple[str, DeadLetter]] = []

    def publish(self, topic: str, letters: list[DeadLetter]) -> list[dict[str, Any]]:
        self.published += [(topic, item) for item in letters]
        return [{"partition": 0, "offset": 5000 + index} for index, _ in enumerate(letters)]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Runs bdf-dlq with a configuration, private credentials and the fake topic."""
    credentials = tmp_path / "kafka-dana.toml"
    credentials.write_text('username = "dana"\npassword = "synthetic-password"\n')
    credentials.chmod(0o600)
    ring = new_keyring()
    save_keyring(ring, tmp_path / "keys.json")
    seal = MessageKeys.of(ring).seal
    config = tmp_path / "bdf.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = ["127.0.0.1:9092"]\ncredentials_file = "{credentials}"\n'
        f'[stream]\ncheckpoint_location = "{tmp_path}/cp"\nquarantine_file = "{tmp_path}/quarantine.json"\n'
        f'[keys]\nkey_file = "{tmp_path}/keys.json"\n'
    )
    audit_log = tmp_path / "audit.jsonl"
    topic = FakeTopic(  # encrypted as the job writes them, for their source topic
        [
            letter(0, UUID_REASON, seal(json.dumps(poison_profile()).encode(), "user_profiles")),
            letter(1, JSON_REASON, seal(b"{'single': 'quotes'}", "user_profiles")),
            letter(2, UUID_REASON, seal(b"{}", "user_profiles")),
            letter(3, UUID_REASON, seal(b"{}", "elsewhere"), source_topic="elsewhere"),
        ]
    )
    replayer = FakeReplayer()
    monkeypatch.setattr(dlq, "open_dead_letters", lambda *_: topic)
    monkeypatch.setattr(dlq, "open_replayer", lambda *_: replayer)

    def run(*args: str, input: str | None = None):
        options = ["--config", str(config), "--audit-log", str(audit_log)]
        return CliRunner().invoke(dlq.main, [*options, *args], input=input)

    run.audit_log, run.topic, run.replayer, run.tmp_path = audit_log, topic, replayer, tmp_path
    return run


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_count_groups_the_dead_letters_by_reason(cli):
    result = cli("count", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "topic": "user_profiles_dlq",
        "total": 4,
        "by_reason": {UUID_REASON: 3, JSON_REASON: 1},
    }
    assert "       3  login.uuid is not a UUID" in cli("count").stdout


def test_list_filters_by_reason_and_limits_without_showing_payloads(cli):
    result = cli("--json", "list", "--reason", "UUID", "--limit", "2")
    report = json.loads(result.stdout)
    assert report["matching"] == 3
    assert [entry["offset"] for entry in report["entries"]] == [0, 2]
    text = cli("list").stdout
    assert "0:1  2026-11-18T11:06:40.000Z  user_profiles:0:1001  51 B  not a JSON object" in text
    assert "quotes" not in text and "synthetic-key" not in text


def test_show_masks_by_default(cli):
    result = cli("show", "0:0", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["masked"] is True
    assert shown["stored"] == "encrypted (message key id 1)"
    assert shown["key"] == "<text 13>"
    assert shown["payload"]["value"]["login"]["uuid"].startswith("<text 37")
    assert not cli.audit_log.exists()


def test_show_opens_a_dead_letter_with_the_key_of_its_source_topic(cli):
    shown = json.loads(cli("show", "0:3", "--json").stdout)
    assert (shown["stored"], shown["payload"]["format"]) == ("encrypted (message key id 1)", "JSON")


def test_a_dead_letter_written_before_encryption_is_shown_masked_as_stored():
    plain = letter(9, UUID_REASON, b'{"nat": "FI"}')
    payload, stored = dlq.opened_payload(plain, MessageKeys.of(new_keyring()), "user_profiles")
    assert (payload, stored) == (b'{"nat": "FI"}', f"shown as stored: {NOT_ENCRYPTED}")
    other_key = letter(9, UUID_REASON, MessageKeys.of(new_keyring()).seal(b"{}", "user_profiles"))
    payload, stored = dlq.opened_payload(other_key, MessageKeys.of(new_keyring()), "user_profiles")
    assert (payload, stored) == (other_key.value, "shown as stored: message: cannot be decrypted")


def test_show_without_a_key_file_is_one_clear_message(cli):
    (cli.tmp_path / "keys.json").unlink()
    result = cli("show", "0:0")
    assert result.exit_code == 1 and "keys.json" in result.output and "Traceback" not in result.output


def test_show_unmask_asks_then_records_an_audit_line_without_the_payload(cli):
    refused = cli("show", "0:1", "--unmask", input="n\n")
    assert refused.exit_code == 1
    assert "quotes" not in refused.stdout and not cli.audit_log.exists()

    result = cli("show", "0:1", "--unmask", "--json", input="y\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["payload"] == "{'single': 'quotes'}"
    (line,) = audit_lines(cli.audit_log)
    assert line["action"] == "dlq_unmask" and (line["dlq_partition"], line["dlq_offset"]) == (0, 1)
    assert "quotes" not in cli.audit_log.read_text()


def test_show_of_an_unknown_offset_is_one_clear_message(cli):
    result = cli("show", "0:99")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: user_profiles_dlq has no message at 0:99"
    assert "Traceback" not in result.output
    assert "is not PARTITION:OFFSET" in cli("show", "zero").output


def test_replay_dry_run_publishes_nothing(cli):
    result = cli("replay", "0:0", "0:2", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replay"] == ["0:0", "0:2"]
    assert cli.replayer.published == [] and not cli.audit_log.exists()


def test_replay_asks_publishes_key_and_bytes_and_audits_each_message(cli):
    assert cli("replay", "0:0", input="n\n").exit_code == 1
    assert cli.replayer.published == []

    result = cli("replay", "0:0", "0:1", input="y\n")
    assert result.exit_code == 0, result.output
    assert "replayed 2 of 2 dead letter(s) to user_profiles" in result.stdout
    assert [(topic, item.offset) for topic, item in cli.replayer.published] == [
        ("user_profiles", 0),
        ("user_profiles", 1),
    ]
    # the encrypted bytes, unchanged: the job opens them as it would have the first time
    assert [item.value for _, item in cli.replayer.published] == [cli.topic.letters[i].value for i in (0, 1)]
    lines = audit_lines(cli.audit_log)
    assert [(line["action"], line["dlq_offset"], line["to_offset"]) for line in lines] == [
        ("dlq_replay", 0, 5000),
        ("dlq_replay", 1, 5001),
    ]
    assert {line["to_topic"] for line in lines} == {"user_profiles"}
    assert "actor" in lines[0] and lines[0]["principal"] == "dana"
    assert "quotes" not in cli.audit_log.read_text() and "synthetic-key" not in cli.audit_log.read_text()


def test_replay_skips_what_was_replayed_unless_again(cli):
    cli("replay", "0:0", "--yes")
    again = cli("replay", "0:0", "0:2", "--yes", "--json")
    assert json.loads(again.stdout)["skipped_already_replayed"] == ["0:0"]
    assert [item.offset for _, item in cli.replayer.published] == [0, 2]
    cli("replay", "0:0", "--yes", "--again")
    assert [item.offset for _, item in cli.replayer.published] == [0, 2, 0]


def test_replay_by_reason_refuses_dead_letters_from_another_topic(cli):
    result = cli("replay", "--reason", "uuid", "--yes")
    assert result.exit_code == 1
    assert "0:3 did not come from user_profiles" in result.output
    assert cli.replayer.published == []


def test_replay_needs_offsets_or_a_reason(cli):
    assert "one of them" in cli("replay").output
    assert "one of them" in cli("replay", "0:0", "--reason", "x").output


def test_quarantine_writes_the_stream_jobs_file_once_and_audits_it(cli):
    result = cli("quarantine", "user_profiles:0:1209", "--reason", "crash loop: Cassandra refuses the id")
    assert result.exit_code == 0, result.output
    (message,) = load_quarantine(cli.tmp_path / "quarantine.json")
    assert (message.topic, message.partition, message.offset) == ("user_profiles", 0, 1209)
    again = cli("--json", "quarantine", "user_profiles:0:1209", "--reason", "again")
    assert json.loads(again.stdout)["added"] is False
    assert [line["action"] for line in audit_lines(cli.audit_log)] == ["dlq_quarantine"]
    assert "is not TOPIC:PARTITION:OFFSET" in cli("quarantine", "0:1209", "--reason", "x").output


def test_broken_configuration_is_one_message(cli, tmp_path):
    result = CliRunner().invoke(dlq.main, ["--config", str(tmp_path / "missing.toml"), "count"])
    assert result.exit_code == 1
    assert "missing.toml not found" in result.output and "Traceback" not in result.output
