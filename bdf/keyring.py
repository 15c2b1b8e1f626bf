"""Encryption keys for personal data: AES-256-GCM with a key id in every ciphertext.

Ciphertext envelope (what the stream job stores in Cassandra ``*_enc`` columns)::

    0x01 | key id (uint16, big endian) | IV (12 bytes) | ciphertext | GCM tag (16 bytes)

The IV/ciphertext/tag part is exactly what Spark's built-in ``aes_encrypt(..., 'GCM')``
writes, so the JVM encrypts and Python (``cryptography``) decrypts. The first three
bytes plus the column name are the GCM associated data: a ciphertext moved to another
column, or given another key id, fails to decrypt instead of decrypting wrongly.

The key file is JSON, mode 0600, owned by the service user::

    {"format": 1, "active_key_id": 2,
     "encryption_keys": {"1": "<base64>", "2": "<base64>"},
     "pseudonym_key": "<base64>",
     "active_message_key_id": 2, "message_keys": {"1": "<base64>", "2": "<base64>"}}

Rotation adds a key and makes it active; older ids stay to decrypt older rows. The
pseudonym key is not rotated: it makes the email pseudonym stable so that a data
subject can always be found again.

The message keys (``jobs.message_crypto``: Kafka message values) are a family of their
own, so the producer's host can be given them without the column keys. Files written
before they existed have none: ``bdf-keys rotate`` (or ``add-message-key``) adds them,
nothing else does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bdf.config import ConfigError, check_private

ENVELOPE_VERSION = 1
KEY_BYTES = 32
IV_BYTES = 12
_HEADER = struct.Struct(">BH")
T = TypeVar("T")
_HMAC_BLOCK = 64  # SHA-256 block size


class DecryptionError(Exception):
    """The ciphertext is damaged, was made for another column, or its key is gone."""


def envelope_header(key_id: int) -> bytes:
    return _HEADER.pack(ENVELOPE_VERSION, key_id)


def associated_data(header: bytes, column: str) -> bytes:
    return header + column.encode("utf-8")


@dataclass(frozen=True)
class KeyRing:
    active_key_id: int
    encryption_keys: dict[int, bytes]
    pseudonym_key: bytes
    # Kafka message value keys (jobs.message_crypto); empty in files older than them.
    message_keys: dict[int, bytes] = field(default_factory=dict)
    active_message_key_id: int | None = None

    @property
    def active_key(self) -> bytes:
        return self.encryption_keys[self.active_key_id]

    def hmac_pads(self) -> tuple[bytes, bytes]:
        """(key XOR ipad, key XOR opad): HMAC-SHA256 written as two plain SHA-256 calls."""
        padded = self.pseudonym_key.ljust(_HMAC_BLOCK, b"\0")
        return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)

    def pseudonym(self, email: str) -> str:
        """Keyed pseudonym of an email, identical to what the stream job computes."""
        normalized = email.strip().lower().encode("utf-8")
        return hmac.new(self.pseudonym_key, normalized, hashlib.sha256).hexdigest()

    def encrypt(self, plaintext: str, column: str) -> bytes:
        header = envelope_header(self.active_key_id)
        iv = secrets.token_bytes(IV_BYTES)
        sealed = AESGCM(self.active_key).encrypt(
            iv, plaintext.encode("utf-8"), associated_data(header, column)
        )
        return header + iv + sealed

    def decrypt(self, envelope: bytes, column: str) -> str:
        if len(envelope) < _HEADER.size + IV_BYTES + 16:
            raise DecryptionError("ciphertext too short")
        version, key_id = _HEADER.unpack_from(envelope)
        if version != ENVELOPE_VERSION:
            raise DecryptionError(f"unknown envelope version {version}")
        key = self.encryption_keys.get(key_id)
        if key is None:
            raise DecryptionError(f"key id {key_id} is not in the key file")
        header = envelope[: _HEADER.size]
        iv = envelope[_HEADER.size : _HEADER.size + IV_BYTES]
        try:
            plain = AESGCM(key).decrypt(
                iv, envelope[_HEADER.size + IV_BYTES :], associated_data(header, column)
            )
        except InvalidTag:
            raise DecryptionError(f"authentication failed for column {column!r}") from None
        return plain.decode("utf-8")

    def to_json(self) -> str:
        data: dict[str, object] = {
            "format": 1,
            "active_key_id": self.active_key_id,
            "encryption_keys": encoded_keys(self.encryption_keys),
            "pseudonym_key": base64.b64encode(self.pseudonym_key).decode(),
        }
        if self.message_keys:
            data |= message_part(self)
        return json.dumps(data, indent=2)


def encoded_keys(keys: dict[int, bytes]) -> dict[str, str]:
    return {str(kid): base64.b64encode(key).decode() for kid, key in sorted(keys.items())}


def message_part(ring: KeyRing) -> dict[str, object]:
    """The message keys alone, as the key file writes them (what a producer host gets)."""
    return {
        "active_message_key_id": ring.active_message_key_id,
        "message_keys": encoded_keys(ring.message_keys),
    }


def new_keyring() -> KeyRing:
    key = lambda: secrets.token_bytes(KEY_BYTES)  # noqa: E731
    return KeyRing(1, {1: key()}, key(), {1: key()}, 1)


def _next_id(keys: dict[int, bytes]) -> int:
    new_id = max(keys, default=0) + 1
    if new_id > 0xFFFF:
        raise ConfigError("no key id left (65535 rotations); re-encrypt and retire old keys")
    return new_id


def with_new_message_key(ring: KeyRing) -> KeyRing:
    """``ring`` with a new active message key (the first one in an older file)."""
    new_id = _next_id(ring.message_keys)
    keys = {**ring.message_keys, new_id: secrets.token_bytes(KEY_BYTES)}
    return KeyRing(ring.active_key_id, ring.encryption_keys, ring.pseudonym_key, keys, new_id)


def rotated(ring: KeyRing) -> KeyRing:
    """A new column key and a new message key, both active; old ids keep decrypting."""
    new_id = _next_id(ring.encryption_keys)
    keys = {**ring.encryption_keys, new_id: secrets.token_bytes(KEY_BYTES)}
    return with_new_message_key(
        KeyRing(new_id, keys, ring.pseudonym_key, ring.message_keys, ring.active_message_key_id)
    )


class Relation(StrEnum):
    """How two copies of one deployment's key file relate (``bdf-keys compare``)."""

    SAME = "same"
    FIRST_NEWER = "first-newer"  # the first is a rotation of the second
    SECOND_NEWER = "second-newer"
    CONFLICT = "conflict"  # neither descends from the other: never pick one silently


def _family_extends(newer: dict[int, bytes], older: dict[int, bytes], same_active: bool) -> bool:
    """``newer`` holds every id of ``older`` with the same material, and only newer ids
    besides; with no new id, the same one is active."""
    added = newer.keys() - older.keys()
    return (
        newer.keys() >= older.keys()
        and all(newer[kid] == key for kid, key in older.items())
        and (min(added) > max(older, default=0) if added else same_active)
    )


def _extends(newer: KeyRing, older: KeyRing) -> bool:
    """True when ``newer`` is ``older`` rotated (or given message keys) one or more times."""
    return (
        newer != older
        and _family_extends(
            newer.encryption_keys, older.encryption_keys, newer.active_key_id == older.active_key_id
        )
        and _family_extends(
            newer.message_keys, older.message_keys, newer.active_message_key_id == older.active_message_key_id
        )
    )


def compare_keyrings(first: KeyRing, second: KeyRing) -> tuple[Relation, str]:
    """The relation of two key files and why, without naming any key material."""
    if not hmac.compare_digest(first.pseudonym_key, second.pseudonym_key):
        return Relation.CONFLICT, "the pseudonym (HMAC) keys differ"
    if first == second:
        return Relation.SAME, "identical keys"
    if _extends(first, second):
        return Relation.FIRST_NEWER, f"the first adds key ids {_new_ids(first, second)}"
    if _extends(second, first):
        return Relation.SECOND_NEWER, f"the second adds key ids {_new_ids(second, first)}"
    clashing = _clashing(first.encryption_keys, second.encryption_keys)
    if clashing:
        return Relation.CONFLICT, f"key ids {clashing} have different material"
    clashing = _clashing(first.message_keys, second.message_keys)
    if clashing:
        return Relation.CONFLICT, f"message key ids {clashing} have different material"
    if (first.encryption_keys, first.message_keys) == (second.encryption_keys, second.message_keys):
        return Relation.CONFLICT, "same keys, different active key id"
    return Relation.CONFLICT, "neither is a rotation of the other"


def _clashing(first: dict[int, bytes], second: dict[int, bytes]) -> list[int]:
    return sorted(kid for kid in first.keys() & second.keys() if first[kid] != second[kid])


def _new_ids(newer: KeyRing, older: KeyRing) -> str:
    ids = sorted(newer.encryption_keys.keys() - older.encryption_keys.keys())
    message_ids = sorted(newer.message_keys.keys() - older.message_keys.keys())
    return f"{ids}" + (f" and message key ids {message_ids}" if message_ids else "")


def decode_key(value: object, where: str, path: Path) -> bytes:
    try:
        key = base64.b64decode(str(value), validate=True)
    except ValueError:
        raise ConfigError(f"{path}: {where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: {where} must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def read_key_file(path: Path, decode: Callable[[dict], T]) -> T:
    """``decode`` of a private JSON key file; any malformation is a ConfigError naming the file."""
    check_private(path)
    try:
        return decode(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    except KeyError as exc:
        raise ConfigError(f"{path}: missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: malformed key file: {exc}") from None


def load_keyring(path: Path) -> KeyRing:
    def decode(data: dict):
        active = int(data["active_key_id"])
        keys = {
            int(kid): decode_key(v, f"encryption_keys.{kid}", path)
            for kid, v in data["encryption_keys"].items()
        }
        pseudonym_key = decode_key(data["pseudonym_key"], "pseudonym_key", path)
        return active, keys, pseudonym_key, *decode_message_keys(data, path)

    active, keys, pseudonym_key, message_keys, active_message = read_key_file(path, decode)
    if active not in keys:
        raise ConfigError(f"{path}: active_key_id {active} has no entry in encryption_keys")
    return KeyRing(active, keys, pseudonym_key, message_keys, active_message)


def decode_message_keys(data: dict, path: Path) -> tuple[dict[int, bytes], int | None]:
    """The message keys of a key file's JSON (none in older files)."""
    if "message_keys" not in data:
        return {}, None
    keys = {int(kid): decode_key(v, f"message_keys.{kid}", path) for kid, v in data["message_keys"].items()}
    active = int(data["active_message_key_id"])
    if active not in keys:
        raise ConfigError(f"{path}: active_message_key_id {active} has no entry in message_keys")
    return keys, active


def save_keyring(ring: KeyRing, path: Path) -> None:
    """Write atomically with mode 0600 from the first byte (never briefly world-readable),
    keeping the owner of the file it replaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if path.exists():  # a rotation by root keeps the service account's file its own
        owner = path.stat()
        os.fchown(fd, owner.st_uid, owner.st_gid)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(ring.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
