"""The key file: created private, rotated without losing old keys, refused when unsafe."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from bdf.config import ConfigError
from bdf.keyring import DecryptionError, KeyRing, load_keyring, new_keyring, rotated, save_keyring
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
    assert listing.output.splitlines() == [
        "column\t1\tdecrypt-only",
        "column\t2\tactive",
        "message\t1\tdecrypt-only",
        "message\t2\tactive",
    ]
    assert second.message_keys[1] == first.message_keys[1] != second.message_keys[2]
    assert first.encryption_keys[1].hex() not in listing.output


def _without_message_keys(ring: KeyRing) -> KeyRing:
    """A key file as written before message keys existed."""
    return KeyRing(ring.active_key_id, ring.encryption_keys, ring.pseudonym_key)


def test_a_key_file_without_message_keys_still_loads_and_gets_them_only_when_asked(tmp_path):
    key_file = tmp_path / "k.json"
    old = _without_message_keys(rotated(new_keyring()))
    save_keyring(old, key_file)
    assert "message_keys" not in key_file.read_text()
    assert load_keyring(key_file) == old
    runner = CliRunner()
    assert runner.invoke(main, ["add-message-key", str(key_file)]).exit_code == 0
    extended = load_keyring(key_file)
    assert (extended.active_key_id, extended.encryption_keys, extended.pseudonym_key) == (
        old.active_key_id,
        old.encryption_keys,
        old.pseudonym_key,
    )
    assert (extended.active_message_key_id, list(extended.message_keys)) == (1, [1])
    assert runner.invoke(main, ["add-message-key", str(key_file)]).exit_code == 0
    assert load_keyring(key_file) == extended, "a second add-message-key changes nothing"
    exit_code, answer = _compare(*_key_files(tmp_path, extended, old))
    assert (exit_code, answer) == (
        0,
        {"relation": "first-newer", "reason": "the first adds key ids [] and message key ids [1]"},
    )


def test_rotating_a_key_file_without_message_keys_adds_the_first_one(tmp_path):
    old = _without_message_keys(new_keyring())
    new = rotated(old)
    assert (new.active_key_id, new.active_message_key_id, list(new.message_keys)) == (2, 1, [1])


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


def _compare(first, second):
    result = CliRunner().invoke(main, ["compare", str(first), str(second)])
    return result.exit_code, json.loads(result.output) if result.output.startswith("{") else result.output


def _key_files(tmp_path, first_ring, second_ring):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    save_keyring(first_ring, first)
    save_keyring(second_ring, second)
    return first, second


def test_compare_says_same_for_copies_of_one_key_file(tmp_path):
    ring = new_keyring()
    exit_code, answer = _compare(*_key_files(tmp_path, ring, ring))
    assert (exit_code, answer["relation"]) == (0, "same")


@pytest.mark.parametrize("rotations", [1, 3])
def test_compare_names_the_rotated_copy_newer_in_either_order(tmp_path, rotations):
    older = new_keyring()
    newer = older
    ids = list(range(2, 2 + rotations))
    for _ in range(rotations):
        newer = rotated(newer)
    assert _compare(*_key_files(tmp_path, newer, older)) == (
        0,
        {
            "relation": "first-newer",
            "reason": f"the first adds key ids {ids} and message key ids {ids}",
        },
    )
    exit_code, answer = _compare(*_key_files(tmp_path, older, newer))
    assert (exit_code, answer["relation"]) == (0, "second-newer")


def _conflicting_pairs():
    base = new_keyring()
    other_hmac = KeyRing(base.active_key_id, base.encryption_keys, new_keyring().pseudonym_key)
    fresh_clone = new_keyring()
    same_id_other_key = KeyRing(1, {1: new_keyring().active_key}, base.pseudonym_key)
    rotated_apart = (rotated(base), rotated(base))  # both rotated from base, separately
    rotation = rotated(base)
    other_active = KeyRing(1, rotation.encryption_keys, base.pseudonym_key, rotation.message_keys, 2)
    other_message_active = KeyRing(2, rotation.encryption_keys, base.pseudonym_key, rotation.message_keys, 1)
    message_apart = KeyRing(1, base.encryption_keys, base.pseudonym_key, new_keyring().message_keys, 1)
    return {
        "other-pseudonym-key": ((base, other_hmac), "pseudonym (HMAC) keys differ"),
        "fresh-clone-key": ((base, fresh_clone), "pseudonym (HMAC) keys differ"),
        "same-id-other-material": ((base, same_id_other_key), "key ids [1] have different material"),
        "rotated-on-both-sides": (rotated_apart, "key ids [2] have different material"),
        "other-active-id": ((rotation, other_active), "different active key id"),
        "other-active-message-id": ((rotation, other_message_active), "different active key id"),
        "message-keys-apart": ((base, message_apart), "message key ids [1] have different material"),
    }


@pytest.mark.parametrize(("pair", "reason"), _conflicting_pairs().values(), ids=_conflicting_pairs().keys())
def test_compare_refuses_to_pick_between_unrelated_key_files(tmp_path, pair, reason):
    first, second = _key_files(tmp_path, *pair)
    exit_code, answer = _compare(first, second)
    assert exit_code == 3
    assert answer["relation"] == "conflict" and reason in answer["reason"]
    material = [key.hex() for ring in pair for key in [*ring.encryption_keys.values(), ring.pseudonym_key]]
    assert not any(hex_key in json.dumps(answer) for hex_key in material)


def test_compare_rejects_an_older_copy_that_skips_ids(tmp_path):
    """{1, 3} vs {1, 2, 3}: the second holds an id older than the first's newest, not a rotation."""
    full = rotated(rotated(new_keyring()))
    gapped = KeyRing(3, {1: full.encryption_keys[1], 3: full.encryption_keys[3]}, full.pseudonym_key)
    exit_code, answer = _compare(*_key_files(tmp_path, full, gapped))
    assert (exit_code, answer["relation"]) == (3, "conflict")


def test_compare_of_a_missing_file_exits_1_naming_it(tmp_path):
    key_file = tmp_path / "k.json"
    save_keyring(new_keyring(), key_file)
    result = CliRunner().invoke(main, ["compare", str(key_file), str(tmp_path / "absent.json")])
    assert result.exit_code == 1 and "absent.json" in result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_rotation_by_root_keeps_the_service_accounts_ownership(tmp_path):
    key_file = tmp_path / "k.json"
    save_keyring(new_keyring(), key_file)
    os.chown(key_file, 4321, 4321)
    assert CliRunner().invoke(main, ["rotate", str(key_file)]).exit_code == 0
    assert (key_file.stat().st_uid, key_file.stat().st_gid) == (4321, 4321)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
