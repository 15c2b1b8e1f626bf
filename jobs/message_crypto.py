"""Kafka message values encrypted end to end: the producer seals, the stream job opens.

Every value of the raw topic (and of the dead-letter topic) is the envelope of
``bdf.keyring`` under a *message key* (the key file's ``message_keys``, apart from the
column keys)::

    0x01 | key id (uint16, big endian) | IV (12 bytes) | ciphertext | GCM tag (16 bytes)

The GCM associated data is the 3-byte header and ``message:<topic>``: a value cannot be
moved to another topic, into a Cassandra column (whose associated data is the column's
name), or given another key id. The topic is the *source* topic: a dead letter keeps the
envelope it arrived in, so that ``bdf-dlq replay`` re-publishes it unchanged.

Python (``MessageKeys``: the producer, ``bdf-dlq``, tests) and the JVM (the ``*_column``
functions: the stream job, no Python on the hot path) read and write the same bytes,
and give the same reasons for what cannot be opened.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyspark.sql import Column
from pyspark.sql import functions as F

from bdf.config import ConfigError
from bdf.keyring import (
    ENVELOPE_VERSION,
    IV_BYTES,
    KeyRing,
    associated_data,
    decode_message_keys,
    envelope_header,
    read_key_file,
)

_HEADER = struct.Struct(">BH")
TAG_BYTES = 16
MIN_ENVELOPE_BYTES = _HEADER.size + IV_BYTES + TAG_BYTES
NOT_ENCRYPTED = "message: not encrypted"
UNKNOWN_KEY = "message: unknown key id {}"
UNDECRYPTABLE = "message: cannot be decrypted"


class MessageError(Exception):
    """A value that is no envelope, names a key id not in the key file, or fails its tag."""


def message_context(topic: str) -> str:
    return f"message:{topic}"


@dataclass(frozen=True)
class MessageKeys:
    active_key_id: int
    keys: dict[int, bytes]

    @classmethod
    def of(cls, ring: KeyRing) -> MessageKeys:
        if ring.active_message_key_id is None:
            raise ConfigError(
                "the key file has no message keys: add them with `bdf-keys add-message-key FILE`"
            )
        return cls(ring.active_message_key_id, ring.message_keys)

    def seal(self, plaintext: bytes, topic: str) -> bytes:
        header = envelope_header(self.active_key_id)
        iv = secrets.token_bytes(IV_BYTES)
        aad = associated_data(header, message_context(topic))
        return header + iv + AESGCM(self.keys[self.active_key_id]).encrypt(iv, plaintext, aad)

    def open(self, envelope: bytes, topic: str) -> bytes:
        """The plaintext, or MessageError with the reason the stream job gives."""
        if len(envelope) < MIN_ENVELOPE_BYTES or envelope[0] != ENVELOPE_VERSION:
            raise MessageError(NOT_ENCRYPTED)
        _version, key_id = _HEADER.unpack_from(envelope)
        key = self.keys.get(key_id)
        if key is None:
            raise MessageError(UNKNOWN_KEY.format(key_id))
        header = envelope[: _HEADER.size]
        iv, sealed = envelope[_HEADER.size : _HEADER.size + IV_BYTES], envelope[_HEADER.size + IV_BYTES :]
        try:
            return AESGCM(key).decrypt(iv, sealed, associated_data(header, message_context(topic)))
        except InvalidTag:
            raise MessageError(UNDECRYPTABLE) from None


def load_message_keys(path: Path) -> MessageKeys:
    """The message keys of a key file: the whole one (Spark host) or its message part
    (``{"active_message_key_id": .., "message_keys": {..}}``, the producer's host)."""
    keys, active = read_key_file(path, lambda data: decode_message_keys(data, path))
    if active is None:
        raise ConfigError(
            f"{path}: no message keys: add them with `bdf-keys add-message-key` on the full key file"
        )
    return MessageKeys(active, keys)


# --- the same envelope as Spark columns (the stream job) ---------------------------------------


def _key_id(value: Column) -> Column:
    return F.conv(F.hex(F.substring(value, 2, 2)), 16, 10).cast("int")


def _is_envelope(value: Column) -> Column:
    return (F.length(value) >= MIN_ENVELOPE_BYTES) & (
        F.substring(value, 1, 1) == F.lit(bytes([ENVELOPE_VERSION]))
    )


def _key_for(key_id: Column, keys: MessageKeys) -> Column:
    """The key of the envelope's id, chosen inside the plan (a CASE over the live ids)."""
    choice = None
    for kid, key in sorted(keys.keys.items()):
        choice = (F if choice is None else choice).when(key_id == kid, F.lit(key))
    return choice


def _aad(header: Column, topic: Column) -> Column:
    return F.concat(header, F.encode(F.concat(F.lit(message_context("")), topic), "UTF-8"))


def opened_column(value: Column, topic: Column, keys: MessageKeys) -> Column:
    """The plaintext bytes of an envelope from ``topic``; null when it cannot be opened."""
    body = F.substring(value, _HEADER.size + 1, 1 << 30)  # IV | ciphertext | tag, as Spark reads it
    return F.when(
        _is_envelope(value),
        F.try_aes_decrypt(
            body,
            _key_for(_key_id(value), keys),
            F.lit("GCM"),
            F.lit("DEFAULT"),
            _aad(F.substring(value, 1, _HEADER.size), topic),
        ),
    )


def opening_failure_column(value: Column, opened: Column, keys: MessageKeys) -> Column:
    """Why a non-empty value could not be opened (``MessageKeys.open``'s reasons), or null."""
    key_id = _key_id(value)
    return (
        F.when(~_is_envelope(value), F.lit(NOT_ENCRYPTED))
        .when(_key_for(key_id, keys).isNull(), F.format_string(UNKNOWN_KEY.replace("{}", "%d"), key_id))
        .when(opened.isNull(), F.lit(UNDECRYPTABLE))
    )


def sealed_column(plaintext: Column, topic: Column, keys: MessageKeys) -> Column:
    """``plaintext`` sealed in the JVM under the active message key (a fresh IV each)."""
    header = envelope_header(keys.active_key_id)
    sealed = F.aes_encrypt(
        plaintext,
        F.lit(keys.keys[keys.active_key_id]),
        F.lit("GCM"),
        F.lit("DEFAULT"),
        F.lit(""),  # empty IV: Spark draws a random 12-byte IV per value
        _aad(F.lit(header), topic),
    )
    return F.concat(F.lit(header), sealed)
