"""The register of processing (GDPR Art. 30(1)) as a validated model.

The source is ``gdpr/register.yaml``. Loading checks the register on its own terms
(every Art. 30(1) item present, ids that exist, treatments that agree with the
columns); ``gdpr.drift`` then checks it against the code and the Ansible defaults.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bdf.config import describe_validation_error

DEFAULT_REGISTER = Path(__file__).with_name("register.yaml")
PLACEHOLDER = "<FILL IN"

FieldTreatment = Literal["kept", "generalised", "encrypted", "derived", "dropped"]
ColumnTreatment = Literal["kept", "generalised", "encrypted", "pseudonymised", "derived"]


class RegisterError(Exception):
    """The register file is missing, not YAML, or incomplete; the message says where."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Model):
    name: str
    address: str | None = None
    email: str
    phone: str


class Processing(_Model):
    name: str
    description: str
    source: str
    hosts_location: str
    automated_decisions: str


class Purpose(_Model):
    id: str
    purpose: str
    lawful_basis: str
    note: str | None = None


class DataCategory(_Model):
    id: str
    name: str
    retention: str
    note: str | None = None


class Store(_Model):
    id: str
    name: str
    holds: str
    retention: str
    # A Kafka topic names who may read it besides the Kafka super users, as acl/access.yml
    # names them ("team data-engineering", "application stream"); gdpr.drift compares them.
    topic: str | None = None
    readers: list[str] = Field(default_factory=list)


class Evidence(_Model):
    """A file of the repository and a text it must contain: what makes a claim true."""

    file: str
    contains: str


class VariableSource(_Model):
    file: str
    variable: str


class Retention(_Model):
    id: str
    what: str
    value: int | None = Field(default=None, description="time limit in `unit`; null: none")
    unit: Literal["s", "ms"] = "s"
    source: VariableSource | None = None
    enforced_by: str
    evidence: list[Evidence] = Field(default_factory=list)
    why: str

    @model_validator(mode="after")
    def _source_with_value(self) -> Retention:
        if (self.value is None) != (self.source is None):
            raise ValueError("a time limit (value) and the variable that sets it (source) go together")
        return self

    @property
    def seconds(self) -> float | None:
        if self.value is None:
            return None
        return self.value / 1000 if self.unit == "ms" else float(self.value)


class StoredColumn(_Model):
    column: str
    as_: ColumnTreatment = Field(alias="as")


class FieldEntry(_Model):
    """One or more input fields (dotted paths) sharing a treatment and a reason."""

    fields: list[str] = Field(min_length=1)
    category: str
    treatment: FieldTreatment
    columns: list[StoredColumn] = Field(default_factory=list)
    aggregated_in: list[str] = Field(default_factory=list)
    stored_in: list[str] = Field(default_factory=list)  # empty: never stored anywhere
    why: str

    @model_validator(mode="after")
    def _treatment_matches_columns(self) -> FieldEntry:
        kinds = {column.as_ for column in self.columns}
        expected = {
            "dropped": not self.columns and not self.aggregated_in,
            "encrypted": "encrypted" in kinds,
            "derived": kinds == {"derived"},
            "kept": "kept" in kinds,
            "generalised": "generalised" in kinds,
        }
        if not expected[self.treatment]:
            raise ValueError(
                f"treatment {self.treatment!r} of {', '.join(self.fields)} does not match its "
                f"columns ({', '.join(sorted(kinds)) or 'none'})"
            )
        return self


class Note(_Model):
    column: str | None = None
    collection: str | None = None
    why: str


class Recipient(_Model):
    name: str
    kind: Literal["internal", "processor", "third_party"]
    receives: str


class Transfers(_Model):
    summary: str
    details: str


class SecurityMeasure(_Model):
    id: str
    title: str
    status: Literal["in_place", "gap"]
    description: str
    evidence: list[Evidence] = Field(default_factory=list)
    remedy: str | None = None

    @model_validator(mode="after")
    def _claims_have_evidence(self) -> SecurityMeasure:
        if self.status == "in_place" and not self.evidence:
            raise ValueError(f"measure {self.id!r} is in place but names no evidence")
        if self.status == "gap" and not self.remedy:
            raise ValueError(f"gap {self.id!r} names no remedy")
        return self


class SubjectRight(_Model):
    right: str
    how: str


class RemainingCopy(_Model):
    copy_: str = Field(alias="copy")
    readable: str
    until: str


class Register(_Model):
    format: Literal[1]
    title: str
    version: str
    last_reviewed: str
    controller: Contact
    joint_controllers: str
    representative: str
    dpo: Contact
    processing: Processing
    purposes: list[Purpose] = Field(min_length=1)
    data_subjects: list[str] = Field(min_length=1)
    special_categories: str
    data_categories: list[DataCategory] = Field(min_length=1)
    stores: list[Store] = Field(min_length=1)
    retention: list[Retention] = Field(min_length=1)
    fields: list[FieldEntry] = Field(min_length=1)
    bookkeeping_columns: list[Note]
    other_collections: list[Note]
    recipients: list[Recipient] = Field(min_length=1)
    third_country_transfers: Transfers
    security_measures: list[SecurityMeasure] = Field(min_length=1)
    subject_rights: list[SubjectRight] = Field(min_length=1)
    after_erasure: list[RemainingCopy]

    @model_validator(mode="after")
    def _references_exist(self) -> Register:
        problems = list(_dangling_references(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- views used by the drift check, the renderers and the subject commands ---

    def field_entries(self) -> dict[str, FieldEntry]:
        """Input field path -> its entry (each path once; duplicates are a load error)."""
        return {path: entry for entry in self.fields for path in entry.fields}

    def retention_by_id(self) -> dict[str, Retention]:
        return {item.id: item for item in self.retention}

    def store_by_id(self) -> dict[str, Store]:
        return {item.id: item for item in self.stores}

    def category_by_id(self) -> dict[str, DataCategory]:
        return {item.id: item for item in self.data_categories}

    def placeholders(self) -> list[str]:
        """Dotted paths of the values the controller still has to fill in."""
        return [path for path, value in _leaves(self.model_dump(by_alias=True)) if PLACEHOLDER in value]


def _duplicates(values: list[str]) -> list[str]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _dangling_references(register: Register) -> Iterator[str]:
    for kind, ids in (
        ("purpose", [p.id for p in register.purposes]),
        ("data category", [c.id for c in register.data_categories]),
        ("store", [s.id for s in register.stores]),
        ("retention", [r.id for r in register.retention]),
        ("security measure", [m.id for m in register.security_measures]),
        ("field", [path for entry in register.fields for path in entry.fields]),
    ):
        for duplicate in _duplicates(ids):
            yield f"{kind} {duplicate!r} is declared twice"
    retention = register.retention_by_id()
    stores = register.store_by_id()
    categories = register.category_by_id()
    referring = [
        *((f"data category {c.id!r}", c.retention) for c in register.data_categories),
        *((f"store {s.id!r}", s.retention) for s in register.stores),
        *((f"after_erasure {r.copy_!r}", r.until) for r in register.after_erasure),
    ]
    for where, ref in referring:
        if ref not in retention:
            yield f"{where} refers to unknown retention {ref!r}"
    for entry in register.fields:
        label = ", ".join(entry.fields)
        if entry.category not in categories:
            yield f"field {label} has unknown category {entry.category!r}"
        for store in entry.stored_in:
            if store not in stores:
                yield f"field {label} is stored in unknown store {store!r}"


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            label = value.get("id", index) if isinstance(value, dict) else index
            yield from _leaves(value, f"{prefix}{label}.")
    elif isinstance(node, str):
        yield prefix.rstrip("."), node


def parse_register(data: Any, source: str = "register") -> Register:
    try:
        return Register.model_validate(data)
    except ValidationError as exc:
        raise RegisterError(describe_validation_error(exc, f"register {source}")) from None


def load_register(path: Path = DEFAULT_REGISTER) -> Register:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegisterError(f"register {path} not found") from None
    except yaml.YAMLError as exc:
        raise RegisterError(f"{path}: not valid YAML: {exc}") from None
    return parse_register(data, str(path))
