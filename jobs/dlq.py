"""``bdf-dlq``: work with the dead letters of the stream job (topic ``kafka.dead_letter_topic``).

    bdf-dlq count                                   # dead letters per dlq.reason
    bdf-dlq list [--reason TEXT] [--limit N]        # where each came from; never the payload
    bdf-dlq show PARTITION:OFFSET [--unmask]        # one dead letter, personal data masked
    bdf-dlq replay PARTITION:OFFSET... | --reason TEXT [--dry-run] [--yes]
    bdf-dlq quarantine TOPIC:PARTITION:OFFSET --reason TEXT

Who: a member of the data-engineering team (acl/access.yml), with their own SCRAM
credentials (``--credentials-file``, or the configuration's ``kafka.credentials_file``).
The team may read the dead-letter topic and write the source topic (replay); the stream
job's principal may only write dead letters, the producer's only publish profiles.
Personal, not shared, credentials make every replay attributable in the broker's logs
as well as in the audit log here.

The topic is read from its first to its last offset with assigned partitions: no
consumer group is joined and no offset is committed, so reading changes nothing.
``--unmask``, ``replay`` and ``quarantine`` append one JSON line each to the audit log
(who, when, which offsets, where to): never a key or a payload.

Dead letters are encrypted like the raw topic (``jobs.message_crypto``): ``show`` opens
them with the configuration's key file (``keys.key_file``: on the Spark host, readable by
root and the job's account only), then masks as before; ``replay`` re-publishes the
encrypted bytes as they are, so ``count``, ``list`` and ``replay`` need no key.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bdf import clients
from bdf.audit import AuditError, open_audit_log
from bdf.config import ConfigError, Credentials, KafkaSettings, load_credentials, load_settings
from bdf.logs import setup_logging
from jobs.cli_options import config_option, verbose_option
from jobs.dead_letter import (
    HEADER_PREFIX,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from jobs.message_crypto import MessageError, MessageKeys, load_message_keys
from jobs.quarantine import QuarantinedMessage, QuarantineError, add_to_quarantine

log = logging.getLogger("bdf.dlq")

# acl/access.yml grants the data-engineering team Read on groups with this prefix (a
# unit test keeps them in step). No group is joined, but librdkafka needs a group id.
GROUP_PREFIX = "dlq-inspect"
AUDIT_LOG_ENV = "BDF_DLQ_AUDIT_LOG"
DEFAULT_AUDIT_LOG = Path("/var/log/bigdataflow/dlq-audit.jsonl")
REPLAY_ACTION = "dlq_replay"


class DlqError(Exception):
    """Something the operator can fix (access, unreachable broker, unknown offset)."""


# --- positions -----------------------------------------------------------------------------

_POSITION = re.compile(r"(\d+):(\d+)")
_SOURCE_POSITION = re.compile(r"([A-Za-z0-9._-]{1,249}):(\d+):(\d+)")  # Kafka topic names have no ':'


def parse_position(text: str) -> tuple[int, int]:
    """'0:1209' -> (partition 0, offset 1209)."""
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET (e.g. 0:1209)")
    return int(match[1]), int(match[2])


def parse_source_position(text: str) -> tuple[str, int, int]:
    """'user_profiles:0:1209' -> ('user_profiles', 0, 1209)."""
    match = _SOURCE_POSITION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not TOPIC:PARTITION:OFFSET (e.g. user_profiles:0:1209)")
    return match[1], int(match[2]), int(match[3])


# --- one dead letter -----------------------------------------------------------------------


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def _number(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


@dataclass(frozen=True)
class DeadLetter:
    """A message of the dead-letter topic: the original key and bytes and the job's headers."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @classmethod
    def from_message(cls, message: Any) -> DeadLetter:
        """From a confluent_kafka.Message."""
        kind, timestamp = message.timestamp()
        return cls(
            partition=message.partition(),
            offset=message.offset(),
            timestamp_ms=timestamp if kind else None,  # 0: TIMESTAMP_NOT_AVAILABLE
            key=message.key(),
            value=message.value(),
            headers=tuple(message.headers() or ()),
        )

    def header(self, name: str) -> str | None:
        return next((_text(value) for key, value in self.headers if key == name), None)

    @property
    def reason(self) -> str:
        return self.header(REASON_HEADER) or "(no dlq.reason header)"

    @property
    def source_topic(self) -> str | None:
        return self.header(SOURCE_TOPIC_HEADER)

    @property
    def source_partition(self) -> int | None:
        return _number(self.header(SOURCE_PARTITION_HEADER))

    @property
    def source_offset(self) -> int | None:
        return _number(self.header(SOURCE_OFFSET_HEADER))

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def replay_headers(self) -> list[tuple[str, bytes | None]]:
        """The message's own headers, without the job's dlq.* ones."""
        return [(key, value) for key, value in self.headers if not key.startswith(HEADER_PREFIX)]

    def summary(self) -> dict[str, Any]:
        """Where it is, where it came from and why: no key, no payload."""
        timestamp = None
        if self.timestamp_ms is not None:
            moment = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
            timestamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": timestamp,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "reason": self.reason,
            "bytes": len(self.value or b""),
        }


def reason_matches(letter: DeadLetter, text: str | None) -> bool:
    """``--reason``: a case-insensitive part of dlq.reason (no filter when None)."""
    return text is None or text.casefold() in letter.reason.casefold()


def count_reasons(letters: Iterable[DeadLetter]) -> dict[str, int]:
    """dlq.reason -> dead letters, most frequent first (then by reason)."""
    counts = Counter(letter.reason for letter in letters)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --- masking -------------------------------------------------------------------------------

# Coarse codes the job keeps in plain text and counts (see the register): shown when they
# are short and printable, since a wrong one is often why the message was rejected.
PLAIN_PATHS = frozenset({"gender", "nat"})
PLAIN_MAX_LENGTH = 16
MAX_DEPTH = 32
MAX_ITEMS = 50
HEAD_BYTES = 32
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]{1,40}")  # keys like the schema's; others may carry data
_UTF8_BOM = b"\xef\xbb\xbf"


def describe_text(text: str) -> str:
    """A string's shape without its content: '<text 37: control characters>'."""
    traits = []
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        traits.append("control characters")
    if not text.isascii():
        traits.append("non-ASCII")
    if text != text.strip():
        traits.append("surrounding whitespace")
    return f"<text {len(text)}{': ' + ', '.join(traits) if traits else ''}>"


def mask_json(value: Any, path: tuple[str, ...] = ()) -> Any:
    """The same structure with every value replaced by its shape, except short plain codes."""
    if len(path) > MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH}>"
    if isinstance(value, dict):
        return {
            (key if _IDENTIFIER.fullmatch(key) else describe_text(key)): mask_json(item, (*path, key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        masked = [mask_json(item, (*path, "[]")) for item in value[:MAX_ITEMS]]
        return masked + ([f"<{len(value) - MAX_ITEMS} more items>"] if len(value) > MAX_ITEMS else [])
    if isinstance(value, str):
        shown = ".".join(path) in PLAIN_PATHS and len(value) <= PLAIN_MAX_LENGTH
        return value if shown and value.isascii() and value.isprintable() else describe_text(value)
    if isinstance(value, bool) or value is None:
        return value  # true/false/null say nothing about a person
    return "<number>"


def masked_head(raw: bytes) -> str:
    """The first bytes in hex, letters, digits and non-ASCII bytes hidden as '**'."""
    return " ".join(
        f"{byte:02x}" if byte < 0x80 and not chr(byte).isalnum() else "**" for byte in raw[:HEAD_BYTES]
    )


def mask_payload(raw: bytes | None) -> dict[str, Any]:
    """What `show` prints of a payload by default: its size and shape, never its content."""
    if raw is None:
        return {"format": "none", "bytes": 0}
    shape: dict[str, Any] = {"bytes": len(raw)}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {"format": "not UTF-8", **shape, "first_invalid_byte": exc.start, "head": masked_head(raw)}
    if raw.startswith(_UTF8_BOM):
        shape["starts_with_bom"] = True
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        return {"format": "not JSON", **shape, "json_error": reason, "head": masked_head(raw)}
    return {"format": "JSON", **shape, "value": mask_json(document)}


def mask_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return describe_text(key.decode("utf-8"))
    except UnicodeDecodeError:
        return f"<bytes {len(key)}: not UTF-8>"


def opened_payload(letter: DeadLetter, keys: MessageKeys, default_topic: str) -> tuple[bytes | None, str]:
    """The plaintext of a dead letter and how it was stored: 'encrypted (message key id N)',
    or why it is shown as stored (a dead letter written before encryption, another key)."""
    if letter.value is None:
        return None, "none"
    try:
        plain = keys.open(letter.value, letter.source_topic or default_topic)
    except MessageError as exc:
        return letter.value, f"shown as stored: {exc}"
    return plain, f"encrypted (message key id {int.from_bytes(letter.value[1:3], 'big')})"


def unmasked(raw: bytes | None) -> str | None:
    """The bytes as text for --unmask; undecodable bytes as \\x escapes."""
    return None if raw is None else raw.decode("utf-8", errors="backslashreplace")


# --- Kafka ---------------------------------------------------------------------------------


def _kafka_error(exc: Exception, principal: str, topic: str) -> DlqError:
    error = exc.args[0] if exc.args else exc
    name = error.name() if hasattr(error, "name") else ""
    text = error.str() if hasattr(error, "str") else str(error)
    if "AUTHORIZATION" in name:
        return DlqError(
            f"the principal User:{principal} may not use {topic} ({name}): run bdf-dlq with the"
            " credentials of a data-engineering member (--credentials-file)"
        )
    if "AUTHENTICATION" in name:
        return DlqError(f"Kafka refused the credentials of {principal}: {text}")
    return DlqError(f"Kafka: {text} ({name or type(exc).__name__})")


class DeadLetterTopic:
    """Reads the dead-letter topic with assigned partitions: no group, no commits."""

    def __init__(self, kafka: KafkaSettings, credentials: Credentials, timeout: float) -> None:
        from confluent_kafka import Consumer

        self.topic = kafka.dead_letter_topic
        self.principal = credentials.username
        self.timeout = timeout
        self._consumer = Consumer(
            clients.kafka_config(kafka, credentials)
            | {
                "client.id": "bdf-dlq",
                "group.id": f"{GROUP_PREFIX}.bdf-dlq",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
            },
            logger=logging.getLogger("bdf.dlq.kafka"),
        )

    def close(self) -> None:
        self._consumer.close()

    def _call(self, action: Callable[[], Any]) -> Any:
        from confluent_kafka import KafkaException

        try:
            return action()
        except KafkaException as exc:
            raise _kafka_error(exc, self.principal, self.topic) from None

    def partitions(self) -> list[int]:
        metadata = self._call(lambda: self._consumer.list_topics(self.topic, timeout=self.timeout))
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            error = topic.error if topic is not None else None
            if error is not None and "AUTHORIZATION" in error.name():
                raise _kafka_error(Exception(error), self.principal, self.topic)
            raise DlqError(f"topic {self.topic} not found: {error.str() if error else 'no metadata'}")
        return sorted(topic.partitions)

    def _watermarks(self, partition: int) -> tuple[int, int]:
        from confluent_kafka import TopicPartition

        return self._call(
            lambda: self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self.timeout
            )
        )

    def scan(self) -> Iterator[DeadLetter]:
        """Every dead letter there is now, partition by partition, oldest first."""
        from confluent_kafka import TopicPartition

        ends: dict[int, int] = {}
        starts = []
        for partition in self.partitions():
            low, high = self._watermarks(partition)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(self.topic, partition, low))
        if not ends:
            return
        self._consumer.assign(starts)
        letters: list[DeadLetter] = []
        while ends:
            message = self._poll()
            partition = message.partition()
            if partition not in ends:
                continue
            if message.error() is None:
                letters.append(DeadLetter.from_message(message))
            # Stop at the end seen at the start: a busy topic still gives a finite listing.
            if message.error() is not None or message.offset() >= ends[partition] - 1:
                del ends[partition]
        yield from sorted(letters, key=lambda letter: (letter.partition, letter.offset))

    def fetch(self, partition: int, offset: int) -> DeadLetter:
        """The dead letter at PARTITION:OFFSET, or DlqError saying why there is none."""
        from confluent_kafka import TopicPartition

        if partition not in self.partitions():
            raise DlqError(f"{self.topic} has no partition {partition}")
        low, high = self._watermarks(partition)
        if not low <= offset < high:
            raise DlqError(
                f"{self.topic} partition {partition} holds offsets {low} to {high - 1}: {offset} is not"
                " there (expired after the topic's retention, or not written yet)"
            )
        self._consumer.assign([TopicPartition(self.topic, partition, offset)])
        while True:
            message = self._poll()
            if message.error() is not None or message.offset() > offset:
                raise DlqError(f"{self.topic} has no message at {partition}:{offset}")
            if message.offset() == offset:
                return DeadLetter.from_message(message)

    def _poll(self) -> Any:
        from confluent_kafka import KafkaError

        message = self._consumer.poll(self.timeout)
        if message is None:
            raise DlqError(f"no answer from Kafka within {self.timeout:.0f}s while reading {self.topic}")
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            from confluent_kafka import KafkaException

            raise _kafka_error(KafkaException(error), self.principal, self.topic)
        return message


class Replayer:
    """Publishes dead letters back to the source topic: idempotent, acks=all."""

    def __init__(self, kafka: KafkaSettings, credentials: Credentials, timeout: float) -> None:
        from confluent_kafka import Producer

        self.principal = credentials.username
        self.timeout = timeout
        self._producer = Producer(
            clients.kafka_config(kafka, credentials)
            | {"client.id": "bdf-dlq", "acks": "all", "enable.idempotence": True},
            logger=logging.getLogger("bdf.dlq.kafka"),
        )

    def publish(self, topic: str, letters: list[DeadLetter]) -> list[dict[str, Any]]:
        """One outcome per letter, in order: the new partition and offset, or the error."""
        from confluent_kafka import KafkaException

        outcomes: list[dict[str, Any]] = [{"error": "not delivered in time"} for _ in letters]

        def delivered(index: int) -> Callable[[Any, Any], None]:
            def report(error: Any, message: Any) -> None:
                if error is None:
                    outcomes[index] = {"partition": message.partition(), "offset": message.offset()}
                else:
                    outcomes[index] = {"error": error.name()}

            return report

        for index, letter in enumerate(letters):
            try:
                self._producer.produce(
                    topic,
                    key=letter.key,
                    value=letter.value,
                    headers=letter.replay_headers(),
                    on_delivery=delivered(index),
                )
            except (BufferError, KafkaException) as exc:  # e.g. larger than message.max.bytes
                outcomes[index] = {"error": str(exc.args[0]) if exc.args else type(exc).__name__}
        self._producer.flush(self.timeout)
        return outcomes


def open_dead_letters(kafka: KafkaSettings, credentials: Credentials, timeout: float) -> DeadLetterTopic:
    return DeadLetterTopic(kafka, credentials, timeout)


def open_replayer(kafka: KafkaSettings, credentials: Credentials, timeout: float) -> Replayer:
    return Replayer(kafka, credentials, timeout)


def replayed_positions(audit_log: Path, dead_letter_topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of the dead letters this audit log records as replayed."""
    try:
        lines = audit_log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise DlqError(f"cannot read the audit log {audit_log}: {exc.strerror}") from None
    positions = set()
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: it recorded nothing usable
        if entry.get("action") == REPLAY_ACTION and entry.get("dlq_topic") == dead_letter_topic:
            positions.add((entry["dlq_partition"], entry["dlq_offset"]))
    return positions


# --- the command line ----------------------------------------------------------------------


@dataclass
class Options:
    """What the root command collects; every subcommand receives it."""

    config_path: Path | None
    credentials_file: Path | None
    audit_log: Path
    timeout: float
    json: bool = False
    _kafka: KafkaSettings | None = field(default=None, repr=False)

    def emit(self, text: str, data: dict[str, Any]) -> None:
        """Command output on stdout, as text or one JSON object."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=True) if self.json else text)

    def note(self, text: str) -> None:
        """Diagnostics and questions: stderr, so that stdout stays parseable."""
        click.echo(text, err=True)

    def kafka(self) -> KafkaSettings:
        if self._kafka is None:
            settings = load_settings(self.config_path)
            settings.require("kafka")
            kafka = settings.kafka
            if self.credentials_file is not None:
                kafka = kafka.model_copy(update={"credentials_file": self.credentials_file})
            self._kafka = kafka
        return self._kafka

    def credentials(self) -> Credentials:
        return load_credentials(self.kafka().credentials_file)

    def dead_letters(self) -> DeadLetterTopic:
        return open_dead_letters(self.kafka(), self.credentials(), self.timeout)

    def message_keys(self) -> MessageKeys:
        settings = load_settings(self.config_path)
        settings.require("keys")
        return load_message_keys(settings.keys.key_file)


pass_options = click.make_pass_decorator(Options)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Options).json = True


# `bdf-dlq count --json`, as well as the group's `bdf-dlq --json count`.
json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_set_json, help="Output one JSON object."
)


def subcommand(command: Callable[..., Any]) -> Callable[..., Any]:
    """--json, the Options as first argument, and errors a user can cause as one message."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ConfigError, DlqError, AuditError, QuarantineError) as exc:
            raise click.ClickException(str(exc)) from None

    return json_option(pass_options(wrapper))


class PositionType(click.ParamType):
    name = "PARTITION:OFFSET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse_position(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.option(
    "--credentials-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BDF_DLQ_CREDENTIALS_FILE",
    show_envvar=True,
    help="Your own SCRAM credentials (TOML username/password, mode 0600) instead of the"
    " configuration's kafka.credentials_file.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=AUDIT_LOG_ENV,
    default=DEFAULT_AUDIT_LOG,
    show_default=True,
    show_envvar=True,
    help="JSON lines: who unmasked, replayed or quarantined which offsets, when.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for each answer from Kafka.",
)
@click.option("--json", "json_output", is_flag=True, help="Output one JSON object.")
@verbose_option
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    credentials_file: Path | None,
    audit_log: Path,
    timeout: float,
    json_output: bool,
    verbose: bool,
) -> None:
    """Count, list, show (masked), replay and quarantine the stream job's dead letters.

    Run it as a member of the data-engineering team, with your own Kafka credentials.
    """
    setup_logging(verbose)
    ctx.obj = Options(config_path, credentials_file, audit_log, timeout, json_output)


@main.command()
@subcommand
def count(options: Options) -> None:
    """Dead letters per dlq.reason, most frequent first."""
    topic = options.dead_letters()
    try:
        counts = count_reasons(topic.scan())
    finally:
        topic.close()
    total = sum(counts.values())
    lines = [f"{number:>8}  {reason}" for reason, number in counts.items()]
    options.emit(
        "\n".join([*lines, f"{total:>8}  dead letters in {topic.topic}"]),
        {"topic": topic.topic, "total": total, "by_reason": counts},
    )


reason_filter = click.option("--reason", "reason", help="Only dead letters whose dlq.reason contains TEXT.")


@main.command(name="list")
@reason_filter
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most N, oldest first.",
)
@subcommand
def list_letters(options: Options, reason: str | None, limit: int) -> None:
    """Where each dead letter came from and why (never its key or payload)."""
    topic = options.dead_letters()
    try:
        selected = [letter.summary() for letter in topic.scan() if reason_matches(letter, reason)]
    finally:
        topic.close()
    shown = selected[:limit]
    lines = [
        f"{e['partition']}:{e['offset']}  {e['timestamp'] or '-'}  "
        f"{e['source']['topic']}:{e['source']['partition']}:{e['source']['offset']}  "
        f"{e['bytes']} B  {e['reason']}"
        for e in shown
    ]
    if len(selected) > limit:
        lines.append(f"({len(selected) - limit} more; --limit)")
    options.emit(
        "\n".join(lines) or f"no dead letters in {topic.topic}" + (f" matching {reason!r}" if reason else ""),
        {"topic": topic.topic, "matching": len(selected), "entries": shown},
    )


@main.command()
@click.argument("position", type=PositionType())
@click.option(
    "--unmask",
    is_flag=True,
    help="Show the key and payload as they are (asks first; writes an audit line).",
)
@subcommand
def show(options: Options, position: tuple[int, int], unmask: bool) -> None:
    """One dead letter: where it came from, why, and its payload's shape (values masked).

    The payload is decrypted first, with the configuration's key file (keys.key_file).
    """
    keys = options.message_keys()
    topic = options.dead_letters()
    try:
        letter = topic.fetch(*position)
    finally:
        topic.close()
    payload, stored_as = opened_payload(letter, keys, options.kafka().topic)
    entry = letter.summary() | {"stored": stored_as}
    if unmask:
        click.confirm(
            f"The payload of {topic.topic} {letter.position} may hold personal data in plain text."
            " Show it (recorded in the audit log)?",
            abort=True,
            err=True,
        )
        with open_audit_log(options.audit_log, command="bdf-dlq show --unmask") as audit:
            audit.record(
                "dlq_unmask",
                principal=topic.principal,
                dlq_topic=topic.topic,
                dlq_partition=letter.partition,
                dlq_offset=letter.offset,
            )
        entry |= {"masked": False, "key": unmasked(letter.key), "payload": unmasked(payload)}
    else:
        entry |= {"masked": True, "key": mask_key(letter.key), "payload": mask_payload(payload)}
    options.emit(json.dumps(entry, indent=2, ensure_ascii=True), entry)


def _select(topic: DeadLetterTopic, positions: tuple[tuple[int, int], ...], reason: str | None) -> list:
    if positions:
        return [topic.fetch(*position) for position in dict.fromkeys(positions)]
    return [letter for letter in topic.scan() if reason_matches(letter, reason)]


@main.command()
@click.argument("positions", nargs=-1, type=PositionType())
@reason_filter
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; publish nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before publishing.")
@click.option("--again", is_flag=True, help="Also those the audit log records as replayed already.")
@subcommand
def replay(
    options: Options,
    positions: tuple[tuple[int, int], ...],
    reason: str | None,
    dry_run: bool,
    yes: bool,
    again: bool,
) -> None:
    """Publish dead letters' original key and bytes to their source topic, after a fix.

    Give PARTITION:OFFSET of each, or --reason. The stream job stores a replayed profile
    once (rows by user id, aggregates deduplicated), so a replay is safe to repeat; the
    audit log remembers what was replayed and those are skipped unless --again.
    """
    if bool(positions) == bool(reason):
        raise click.UsageError("give PARTITION:OFFSET of the dead letters, or --reason (one of them)")
    kafka = options.kafka()
    topic = options.dead_letters()
    try:
        letters = _select(topic, positions, reason)
    finally:
        topic.close()
    foreign = [letter.position for letter in letters if letter.source_topic != kafka.topic]
    if foreign:
        raise DlqError(
            f"{', '.join(foreign)} did not come from {kafka.topic} (dlq.source.topic): nothing was replayed"
        )
    done = set() if again else replayed_positions(options.audit_log, topic.topic)
    skipped = [letter.position for letter in letters if (letter.partition, letter.offset) in done]
    letters = [letter for letter in letters if (letter.partition, letter.offset) not in done]
    plan = {
        "topic": kafka.topic,
        "dead_letter_topic": topic.topic,
        "replay": [letter.position for letter in letters],
        "skipped_already_replayed": skipped,
    }
    if skipped:
        options.note(f"skipped, already replayed (see {options.audit_log}; --again): {', '.join(skipped)}")
    if not letters or dry_run:
        verb = "would replay" if dry_run else "replayed"
        options.emit(f"{verb} {len(letters)} dead letter(s) to {kafka.topic}", {**plan, "dry_run": dry_run})
        return
    if not yes:
        options.note(f"{len(letters)} dead letter(s) of {topic.topic}: {', '.join(plan['replay'])}")
        click.confirm(f"Publish them to {kafka.topic}?", abort=True, err=True)
    with open_audit_log(options.audit_log, command="bdf-dlq replay") as audit:
        replayer = open_replayer(kafka, options.credentials(), options.timeout)
        outcomes = replayer.publish(kafka.topic, letters)
        for letter, outcome in zip(letters, outcomes, strict=True):
            audit.record(
                REPLAY_ACTION if "error" not in outcome else f"{REPLAY_ACTION}_failed",
                principal=replayer.principal,
                dlq_topic=topic.topic,
                dlq_partition=letter.partition,
                dlq_offset=letter.offset,
                reason=letter.reason,
                to_topic=kafka.topic,
                **{f"to_{name}" if name != "error" else name: value for name, value in outcome.items()},
            )
    results = [
        {"from": letter.position, **outcome} for letter, outcome in zip(letters, outcomes, strict=True)
    ]
    failed = [result for result in results if "error" in result]
    options.emit(
        f"replayed {len(results) - len(failed)} of {len(results)} dead letter(s) to {kafka.topic}",
        {**plan, "dry_run": False, "results": results},
    )
    if failed:
        raise click.ClickException(
            f"{len(failed)} not delivered: " + ", ".join(f"{r['from']} ({r['error']})" for r in failed)
        )


@main.command()
@click.argument("source", metavar="TOPIC:PARTITION:OFFSET")
@click.option("--reason", required=True, help="Why (becomes the dlq.reason; never quote the message).")
@click.option(
    "--quarantine-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instead of the configuration's stream.quarantine_file.",
)
@subcommand
def quarantine(options: Options, source: str, reason: str, quarantine_file: Path | None) -> None:
    """Make the stream job dead-letter one source message instead of processing it.

    The way out of a crash loop: name the offset the journal shows for the failing batch;
    the job sends the message to the dead-letter topic with REASON. Run it on the stream
    host (its configuration names the file), then restart the job.
    """
    try:
        message = QuarantinedMessage(*parse_source_position(source), reason=reason.strip())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if quarantine_file is None:
        settings = load_settings(options.config_path)
        settings.require("stream")
        quarantine_file = settings.stream.quarantine_file
    with open_audit_log(options.audit_log, command="bdf-dlq quarantine") as audit:
        added = add_to_quarantine(quarantine_file, message)
        if added:
            audit.record(
                "dlq_quarantine",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=message.reason,
                file=str(quarantine_file),
            )
    what = "quarantined" if added else "already quarantined"
    options.emit(
        f"{what}: {source} in {quarantine_file}; the stream job reads the file when it starts"
        " (systemctl restart user-profiles-stream)",
        {"added": added, "file": str(quarantine_file), **asdict(message)},
    )


if __name__ == "__main__":
    sys.exit(main())
