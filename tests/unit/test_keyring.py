"""The key file: created private, rotated without losing old keys, refused when unsafe."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from jobs.config import ConfigError
from jobs.keyring import DecryptionError, load_keyring, new_keyring, rotated, save_keyring
from jobs.keys_cli import main


def test_keys_cli_creates_a_mode_0600_file_and_rotates(tmp_path):
    key_file = tmp_path / "keys" / "profile-keys.json"
    runner = CliRunner()
    assert runner.invoke(main, ["create", str(key_file)]).exit_code == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = load_keyring(key_file)
    assert runner.invoke(main, ["rotate", str(key_file)]).exit_code == 0
    second = load_keyring(key_file)
    assert second.active_key_id == 2
    assert second.encryption_keys[1] == first.encryption_keys[1]
    assert second.pseudonym_key == first.pseudonym_key
    listing = runner.invoke(main, ["list", str(key_file)])
    assert listing.output.splitlines() == ["1\tdecrypt-only", "2\tactive"]
    assert first.encryption_keys[1].hex() not in listing.output


def test_keys_cli_refuses_to_overwrite_an_existing_key_file(tmp_path):
    key_file = tmp_path / "k.json"
    save_keyring(new_keyring(), key_file)
    result = CliRunner().invoke(main, ["create", str(key_file)])
    assert result.exit_code != 0 and "exists" in result.output


def test_key_file_readable_by_others_is_refused(tmp_path):
    key_file = tmp_path / "k.json"
    save_keyring(new_keyring(), key_file)
    key_file.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keyring(key_file)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("pseudonym_key"), "missing key 'pseudonym_key'"),
        (lambda d: d.update(active_key_id=9), "active_key_id 9 has no entry"),
        (lambda d: d["encryption_keys"].update({"1": "c2hvcnQ="}), "must be 32 bytes"),
    ],
    ids=["missing-pseudonym-key", "unknown-active-id", "short-key"],
)
def test_malformed_key_file_names_the_problem(tmp_path, edit, message):
    key_file = tmp_path / "k.json"
    data = json.loads(new_keyring().to_json())
    edit(data)
    key_file.write_text(json.dumps(data))
    key_file.chmod(0o600)
    with pytest.raises(ConfigError, match=message):
        load_keyring(key_file)


def test_python_round_trip_and_tamper_detection():
    ring = new_keyring()
    sealed = ring.encrypt("Ünïcode ✓", "email_enc")
    assert ring.decrypt(sealed, "email_enc") == "Ünïcode ✓"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, "email_enc")
    with pytest.raises(DecryptionError, match="too short"):
        ring.decrypt(b"\x01\x00", "email_enc")


def test_rotation_keeps_decrypting_old_ciphertexts():
    ring = new_keyring()
    old = ring.encrypt("value", "phone_enc")
    newer = rotated(ring)
    assert newer.decrypt(old, "phone_enc") == "value"
    assert newer.encrypt("value", "phone_enc")[1:3] == b"\x00\x02"
