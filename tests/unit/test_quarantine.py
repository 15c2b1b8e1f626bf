"""The stream job's quarantine file: what `bdf-dlq quarantine` writes and the job reads."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bdf.config import load_settings
from jobs.quarantine import QuarantinedMessage, QuarantineError, add_to_quarantine, load_quarantine

CRASHING = QuarantinedMessage("user_profiles", 0, 1209, "crash loop: Cassandra refuses the user id")


def test_missing_file_quarantines_nothing(tmp_path):
    assert load_quarantine(tmp_path / "absent.json") == []


def test_added_message_is_read_back_and_the_file_is_private(tmp_path):
    path = tmp_path / "quarantine.json"
    assert add_to_quarantine(path, CRASHING) is True
    assert load_quarantine(path) == [CRASHING]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["version"] == 1


def test_adding_the_same_offset_again_changes_nothing(tmp_path):
    path = tmp_path / "quarantine.json"
    add_to_quarantine(path, CRASHING)
    before = path.read_bytes()
    again = QuarantinedMessage("user_profiles", 0, 1209, "another reason")
    assert add_to_quarantine(path, again) is False
    assert path.read_bytes() == before


def test_other_offsets_partitions_and_topics_are_kept_in_order(tmp_path):
    path = tmp_path / "quarantine.json"
    others = [
        QuarantinedMessage("user_profiles", 0, 1210, "next one"),
        QuarantinedMessage("user_profiles", 1, 1209, "other partition"),
        QuarantinedMessage("other_topic", 0, 1209, "other topic"),
    ]
    for message in [CRASHING, *others]:
        assert add_to_quarantine(path, message) is True
    assert load_quarantine(path) == [CRASHING, *others]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["quarantine.json"]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"version": 2, "messages": []}',
        '{"version": 1}',
        '{"version": 1, "messages": [{"topic": "t", "partition": "0", "offset": 1, "reason": "r"}]}',
        '{"version": 1, "messages": [{"topic": "t", "partition": 0, "offset": -1, "reason": "r"}]}',
        "[]",
    ],
)
def test_a_broken_file_is_refused_naming_it(tmp_path, text):
    path = tmp_path / "quarantine.json"
    path.write_text(text)
    with pytest.raises(QuarantineError, match=r"quarantine\.json"):
        load_quarantine(path)


def test_a_broken_file_is_not_overwritten_by_an_add(tmp_path):
    path = tmp_path / "quarantine.json"
    path.write_text("not json")
    with pytest.raises(QuarantineError):
        add_to_quarantine(path, CRASHING)
    assert path.read_text() == "not json"


@pytest.mark.parametrize(
    "changes", [{"reason": " "}, {"reason": "x" * 501}, {"offset": -1}, {"partition": -1}, {"topic": ""}]
)
def test_an_unusable_entry_is_refused(changes):
    fields = {"topic": "user_profiles", "partition": 0, "offset": 1, "reason": "r", **changes}
    with pytest.raises(ValueError):
        QuarantinedMessage(**fields)


def test_the_stream_configuration_names_the_file_with_a_default(tmp_path):
    config = tmp_path / "bdf.toml"
    config.write_text('[stream]\ncheckpoint_location = "/tmp/cp"\n')
    assert load_settings(config, environ={}).stream.quarantine_file == Path(
        "/var/lib/bigdataflow/stream-quarantine.json"
    )
    example = load_settings(Path(__file__).parents[2] / "config/bigdataflow.example.toml", environ={})
    assert example.stream.quarantine_file == Path("/var/lib/bigdataflow/stream-quarantine.json")
