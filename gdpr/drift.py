"""No drift: the register must say what the code and the Ansible defaults do.

``code_facts`` reads what the code really does (the job's input and stored schemas,
``FIELD_TREATMENT``, the encrypted columns, the aggregate collections, the Cassandra
table template, the retention variables of the role defaults); ``check`` compares the
register with those facts and returns every disagreement. An empty list means the
register tells the truth; the unit tests and ``bdf-gdpr register check`` fail otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from acl.model import Description, DescriptionError, load_description
from gdpr.model import Register

REPO_ROOT = Path(__file__).resolve().parents[1]
CQL_TEMPLATE = "roles/cassandra/templates/schema.cql.j2"
ACCESS_FILE = "acl/access.yml"
PROFILE_STORE, AGGREGATE_STORE, RAW_TOPIC = "cassandra_profiles", "mongodb_aggregates", "kafka_topic"

# The register may be more precise than the code: it says "generalised" where the
# code keeps a coarse value as it is.
CODE_TREATMENT = {
    "kept": "kept",
    "generalised": "kept",
    "encrypted": "encrypted",
    "derived": "derived",
    "dropped": "dropped",
}


@dataclass(frozen=True)
class CodeFacts:
    """What the code does, gathered once; tests replace parts to prove the check fails."""

    input_fields: frozenset[str]
    field_treatment: Mapping[str, tuple[str, tuple[str, ...]]]
    stored_columns: Mapping[str, str]  # column -> Spark type name
    table_columns: frozenset[str]  # columns of the Cassandra table template
    encrypted_columns: frozenset[str]
    collections: frozenset[str]  # MongoDB collections the job writes
    unpublished_fields: frozenset[str]  # input fields the producer removes before Kafka
    access: Description | None = None  # acl/access.yml: who may read which topic
    root: Path = REPO_ROOT
    overrides: Mapping[str, tuple[str, Any]] = field(default_factory=dict)  # variable -> (file, value)

    def read(self, relative: str) -> str | None:
        try:
            return (self.root / relative).read_text(encoding="utf-8")
        except OSError:
            return None


def table_columns(cql: str) -> frozenset[str]:
    """Column names of the CREATE TABLE statement of the profile table template."""
    match = re.search(r"CREATE TABLE[^(]*\((.*?)\)\s*WITH", cql, flags=re.S)
    if match is None:
        return frozenset()
    names = (line.strip().split()[0] for line in match.group(1).splitlines() if line.strip())
    return frozenset(name for name in names if name.upper() != "PRIMARY")


def inventory_overrides(inventory: Path, variables: set[str]) -> dict[str, tuple[str, Any]]:
    """Values an inventory sets for ``variables`` (group_vars, host_vars, hosts.yml vars)."""
    found: dict[str, tuple[str, Any]] = {}
    for path in sorted([*inventory.rglob("*.yml"), *inventory.rglob("*.yaml")]):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # e.g. an ansible-vault file: not readable here, named in the report
        for name, value in _find_keys(data, variables):
            found[name] = (str(path), value)
    return found


def _find_keys(node: Any, names: set[str]) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in names:
                yield key, value
            yield from _find_keys(value, names)
    elif isinstance(node, list):
        for item in node:
            yield from _find_keys(item, names)


def code_facts(
    root: Path = REPO_ROOT, inventory: Path | None = None, register: Register | None = None
) -> CodeFacts:
    from bdf.schema import PROFILE_SCHEMA, STORED_SCHEMA, schema_leaves
    from jobs.aggregates import AGGREGATE_COLLECTIONS, BATCHES_COLLECTION
    from jobs.producer import SECRET_LOGIN_FIELDS
    from jobs.transform import ENCRYPTED_COLUMNS, FIELD_TREATMENT

    cql = (root / CQL_TEMPLATE).read_text(encoding="utf-8") if (root / CQL_TEMPLATE).exists() else ""
    overrides: dict[str, tuple[str, Any]] = {}
    if inventory is not None and register is not None:
        variables = {item.source.variable for item in register.retention if item.source}
        overrides = inventory_overrides(inventory, variables)
    try:
        access = load_description(root / ACCESS_FILE)
    except (OSError, DescriptionError):
        access = None  # reported by the check, which cannot say who reads the topics
    return CodeFacts(
        input_fields=frozenset(schema_leaves(PROFILE_SCHEMA)),
        field_treatment=dict(FIELD_TREATMENT),
        stored_columns={f.name: f.dataType.typeName() for f in STORED_SCHEMA.fields},
        table_columns=table_columns(cql),
        encrypted_columns=frozenset(ENCRYPTED_COLUMNS.values()),
        collections=frozenset((*AGGREGATE_COLLECTIONS, BATCHES_COLLECTION)),
        unpublished_fields=frozenset(f"login.{name}" for name in SECRET_LOGIN_FIELDS),
        access=access,
        root=root,
        overrides=overrides,
    )


def check(register: Register, facts: CodeFacts) -> list[str]:
    """Every way the register and the code disagree; empty when they agree."""
    return [
        *_check_fields(register, facts),
        *_check_columns(register, facts),
        *_check_stores(register, facts),
        *_check_collections(register, facts),
        *_check_retention(register, facts),
        *_check_topic_readers(register, facts),
        *_check_evidence(register, facts),
    ]


def _check_fields(register: Register, facts: CodeFacts) -> Iterator[str]:
    entries = register.field_entries()
    for path in sorted(facts.input_fields - set(entries)):
        yield f"field {path} is in the job's input schema but not in the register"
    for path in sorted(set(entries) - facts.input_fields):
        yield f"field {path} is in the register but not in the job's input schema"
    for path in sorted(facts.input_fields ^ set(facts.field_treatment)):
        yield f"field {path}: the input schema and FIELD_TREATMENT disagree on whether it exists"
    for path in sorted(set(entries) & set(facts.field_treatment)):
        entry = entries[path]
        code_treatment, code_columns = facts.field_treatment[path]
        if CODE_TREATMENT[entry.treatment] != code_treatment:
            yield (
                f"field {path}: the register says {entry.treatment!r}, "
                f"the job treats it as {code_treatment!r} (FIELD_TREATMENT)"
            )
        declared = {column.column for column in entry.columns}
        if declared != set(code_columns):
            yield (
                f"field {path}: the register stores it in {sorted(declared)}, "
                f"the job in {sorted(code_columns)}"
            )


def _check_columns(register: Register, facts: CodeFacts) -> Iterator[str]:
    declared: dict[str, str] = {}
    for entry in register.fields:
        for column in entry.columns:
            declared[column.column] = column.as_
    bookkeeping = {note.column for note in register.bookkeeping_columns if note.column}
    stored = set(facts.stored_columns)
    for column in sorted(stored - set(declared) - bookkeeping):
        yield f"column {column} is stored by the job but the register names no field or reason for it"
    for column in sorted((set(declared) | bookkeeping) - stored):
        yield f"column {column} is in the register but the job does not store it (STORED_SCHEMA)"
    if facts.table_columns and facts.table_columns != stored:
        difference = sorted(facts.table_columns ^ stored)
        yield f"the Cassandra table ({CQL_TEMPLATE}) and STORED_SCHEMA differ in {difference}"
    for column, kind in sorted(declared.items()):
        encrypted_in_code = column in facts.encrypted_columns
        if (kind == "encrypted") != encrypted_in_code:
            code = "encrypts" if encrypted_in_code else "does not encrypt"
            yield f"column {column}: the register says {kind!r}, the job {code} it (ENCRYPTED_COLUMNS)"
        if kind == "encrypted" and facts.stored_columns.get(column, "binary") != "binary":
            yield f"column {column} is declared encrypted but stored as {facts.stored_columns[column]}"


def _check_stores(register: Register, facts: CodeFacts) -> Iterator[str]:
    for entry in register.fields:
        label = ", ".join(entry.fields)
        stores = set(entry.stored_in)
        for name in entry.fields:
            if name in facts.unpublished_fields and RAW_TOPIC in stores:
                yield f"field {name} is removed by the producer, so stored_in must not list {RAW_TOPIC}"
            if name not in facts.unpublished_fields and RAW_TOPIC not in stores:
                yield f"field {name} is in the raw message, so stored_in must list {RAW_TOPIC}"
        if (PROFILE_STORE in stores) != bool(entry.columns):
            yield f"field {label}: stored_in lists {PROFILE_STORE} if and only if it has columns"
        if (AGGREGATE_STORE in stores) != bool(entry.aggregated_in):
            yield f"field {label}: stored_in lists {AGGREGATE_STORE} if and only if it is aggregated"


def _check_collections(register: Register, facts: CodeFacts) -> Iterator[str]:
    declared = {name for entry in register.fields for name in entry.aggregated_in}
    declared |= {note.collection for note in register.other_collections if note.collection}
    for name in sorted(facts.collections - declared):
        yield f"MongoDB collection {name} is written by the job but not in the register"
    for name in sorted(declared - facts.collections):
        yield f"MongoDB collection {name} is in the register but the job does not write it"


def _check_topic_readers(register: Register, facts: CodeFacts) -> Iterator[str]:
    """The register names exactly who acl/access.yml lets read each Kafka topic."""
    topics = [store for store in register.stores if store.topic is not None]
    if topics and facts.access is None:
        yield f"{ACCESS_FILE} is missing or invalid: who may read {topics[0].topic} cannot be checked"
        return
    for store in topics:
        granted = facts.access.topic_readers(store.topic)
        for reader in sorted(granted - set(store.readers)):
            yield (
                f"store {store.id}: {ACCESS_FILE} lets {reader} read {store.topic}, "
                "but the register does not name it among the readers"
            )
        for reader in sorted(set(store.readers) - granted):
            yield (
                f"store {store.id}: the register names {reader} as a reader of {store.topic}, "
                f"but {ACCESS_FILE} does not let it read the topic"
            )


def _check_retention(register: Register, facts: CodeFacts) -> Iterator[str]:
    for item in register.retention:
        if item.source is None:
            continue
        source = item.source
        text = facts.read(source.file)
        if text is None:
            yield f"retention {item.id}: {source.file} not found"
            continue
        defaults = yaml.safe_load(text) or {}
        if source.variable not in defaults:
            yield f"retention {item.id}: {source.variable} is not set in {source.file}"
            continue
        where, value = source.file, defaults[source.variable]
        if source.variable in facts.overrides:
            where, value = facts.overrides[source.variable]
        if not _same_number(value, item.value):
            yield (
                f"retention {item.id}: the register says {item.value} {item.unit}, "
                f"{where} sets {source.variable} = {value!r}"
            )


def _same_number(value: Any, expected: int | None) -> bool:
    try:
        return int(str(value)) == expected
    except ValueError:
        return False


def _check_evidence(register: Register, facts: CodeFacts) -> Iterator[str]:
    claims = [(f"retention {item.id}", item.evidence) for item in register.retention]
    claims += [(f"security measure {m.id}", m.evidence) for m in register.security_measures]
    for owner, evidence in claims:
        for item in evidence:
            text = facts.read(item.file)
            if text is None:
                yield f"{owner}: evidence file {item.file} not found"
            elif item.contains not in text:
                yield f"{owner}: {item.file} no longer contains {item.contains!r}"
