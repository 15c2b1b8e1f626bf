"""No drift: the register must fail the build when it stops telling what the code does."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from acl.model import parse_description
from bdf.schema import STORED_SCHEMA
from gdpr.cli import main
from gdpr.drift import CodeFacts, check, code_facts, table_columns
from gdpr.model import DEFAULT_REGISTER, Register, load_register, parse_register
from jobs.transform import FIELD_TREATMENT

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def register() -> Register:
    return load_register()


@pytest.fixture(scope="module")
def facts() -> CodeFacts:
    return code_facts(REPO)


def with_field(register: Register, path: str, **changes: Any) -> Register:
    """The register with one field split into its own entry and changed."""
    data = yaml.safe_load(DEFAULT_REGISTER.read_text(encoding="utf-8"))
    for entry in data["fields"]:
        if path in entry["fields"]:
            entry["fields"].remove(path)
            if not entry["fields"]:
                data["fields"].remove(entry)
            data["fields"].append({**copy.deepcopy(entry), "fields": [path], **changes})
            break
    return parse_register(data)


def test_register_agrees_with_the_code_and_the_role_defaults(register, facts):
    assert check(register, facts) == []


def test_every_input_field_and_every_stored_column_is_seen_by_the_check(facts):
    assert set(facts.field_treatment) == facts.input_fields
    assert set(facts.stored_columns) == set(STORED_SCHEMA.fieldNames())
    assert facts.table_columns == set(STORED_SCHEMA.fieldNames())


def test_register_claiming_a_different_treatment_fails(register, facts):
    changed = with_field(register, "phone", treatment="kept", columns=[{"column": "phone_enc", "as": "kept"}])
    problems = check(changed, facts)
    assert any(
        "field phone: the register says 'kept', the job treats it as 'encrypted'" in p for p in problems
    )


def test_register_follows_what_the_producer_publishes(register, facts):
    in_topic = with_field(register, "login.sha256", stored_in=["kafka_topic"])
    problems = check(in_topic, facts)
    assert "field login.sha256 is removed by the producer, so stored_in must not list kafka_topic" in problems
    publishing_secrets = dataclasses.replace(facts, unpublished_fields=frozenset())
    problems = check(register, publishing_secrets)
    assert "field login.password is in the raw message, so stored_in must list kafka_topic" in problems


def test_code_changing_a_treatment_fails(register, facts):
    treatment = dict(FIELD_TREATMENT) | {"login.username": ("kept", ("username",))}
    problems = check(register, dataclasses.replace(facts, field_treatment=treatment))
    assert (
        "field login.username: the register says 'dropped', the job treats it as 'kept' (FIELD_TREATMENT)"
        in (problems)
    )
    assert any(
        "field login.username: the register stores it in [], the job in ['username']" in p for p in problems
    )


def test_generalised_in_the_register_is_kept_in_the_code(register, facts):
    entry = register.field_entries()["location.country"]
    assert entry.treatment == "generalised"
    assert FIELD_TREATMENT["location.country"][0] == "kept"
    assert check(register, facts) == []


def test_field_the_job_reads_but_the_register_omits_fails(register, facts):
    facts = dataclasses.replace(
        facts,
        input_fields=facts.input_fields | {"location.floor"},
        field_treatment=dict(FIELD_TREATMENT) | {"location.floor": ("dropped", ())},
    )
    assert "field location.floor is in the job's input schema but not in the register" in check(
        register, facts
    )


def test_field_in_the_register_that_the_job_does_not_read_fails(register, facts):
    facts = dataclasses.replace(
        facts,
        input_fields=facts.input_fields - {"cell"},
        field_treatment={k: v for k, v in FIELD_TREATMENT.items() if k != "cell"},
        stored_columns={k: v for k, v in facts.stored_columns.items() if k != "cell_enc"},
        table_columns=facts.table_columns - {"cell_enc"},
        encrypted_columns=facts.encrypted_columns - {"cell_enc"},
    )
    problems = check(register, facts)
    assert "field cell is in the register but not in the job's input schema" in problems
    assert any("column cell_enc is in the register but the job does not store it" in p for p in problems)


def test_new_stored_column_without_a_register_entry_fails(register, facts):
    facts = dataclasses.replace(
        facts,
        stored_columns={**facts.stored_columns, "age": "integer"},
        table_columns=facts.table_columns | {"age"},
    )
    assert "column age is stored by the job but the register names no field or reason for it" in check(
        register, facts
    )


def test_column_the_register_calls_encrypted_but_the_job_stores_in_plain_fails(register, facts):
    facts = dataclasses.replace(
        facts,
        encrypted_columns=facts.encrypted_columns - {"email_enc"},
        stored_columns={**facts.stored_columns, "email_enc": "string"},
    )
    problems = check(register, facts)
    assert any(
        "column email_enc: the register says 'encrypted', the job does not encrypt it" in p for p in problems
    )
    assert "column email_enc is declared encrypted but stored as string" in problems


def test_cassandra_table_template_that_differs_from_the_stored_schema_fails(register, facts):
    facts = dataclasses.replace(facts, table_columns=facts.table_columns - {"phone_enc"})
    assert any("the Cassandra table" in p and "phone_enc" in p for p in check(register, facts))


def test_table_columns_are_read_from_the_create_table_statement():
    cql = (REPO / "roles/cassandra/templates/schema.cql.j2").read_text(encoding="utf-8")
    columns = table_columns(cql)
    assert {"user_id", "email_pseudonym", "stored_at"} <= columns
    assert "PRIMARY" not in columns and "KEY" not in columns


def test_aggregate_collection_the_register_does_not_name_fails(register, facts):
    facts = dataclasses.replace(facts, collections=facts.collections | {"users_by_city"})
    assert "MongoDB collection users_by_city is written by the job but not in the register" in check(
        register, facts
    )


def copy_checkout(tmp_path: Path, files: list[str]) -> Path:
    for relative in files:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, target)
    return tmp_path


def evidence_files(register: Register) -> list[str]:
    files = {e.file for m in register.security_measures for e in m.evidence}
    files |= {e.file for r in register.retention for e in r.evidence}
    files |= {r.source.file for r in register.retention if r.source}
    return sorted(files)


def test_role_default_that_differs_from_the_registered_time_limit_fails(register, facts, tmp_path):
    root = copy_checkout(tmp_path, evidence_files(register))
    defaults = root / "roles/cassandra/defaults/main.yml"
    defaults.write_text(
        defaults.read_text().replace(
            "cassandra_profile_ttl_seconds: 94608000", "cassandra_profile_ttl_seconds: 0"
        )
    )
    problems = check(register, dataclasses.replace(facts, root=root))
    assert problems == [
        "retention profile_store: the register says 94608000 s, "
        "roles/cassandra/defaults/main.yml sets cassandra_profile_ttl_seconds = 0"
    ]


def test_inventory_override_of_a_time_limit_fails(register, tmp_path):
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "group_vars" / "all.yml").write_text("bdf_topic_retention_ms: 2592000000\n")
    (inventory / "group_vars" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    problems = check(register, code_facts(REPO, inventory, register))
    assert len(problems) == 1
    assert "retention kafka_topic: the register says 604800000 ms" in problems[0]
    assert "bdf_topic_retention_ms = 2592000000" in problems[0]


def test_security_measure_whose_evidence_is_gone_fails(register, facts, tmp_path):
    root = copy_checkout(tmp_path, evidence_files(register))
    config = root / "roles/kafka/templates/server.properties.j2"
    config.write_text(config.read_text().replace("allow.everyone.if.no.acl.found=false", ""))
    (root / "bdf/logs.py").unlink()
    problems = check(register, dataclasses.replace(facts, root=root))
    assert (
        "security measure kafka_auth: roles/kafka/templates/server.properties.j2 no longer contains "
        "'allow.everyone.if.no.acl.found=false'"
    ) in problems
    assert "security measure logs_without_personal_data: evidence file bdf/logs.py not found" in problems


def with_access(facts: CodeFacts, old: str, new: str) -> CodeFacts:
    """The facts with acl/access.yml edited (one replacement that must apply)."""
    text = (REPO / "acl" / "access.yml").read_text(encoding="utf-8")
    assert old in text
    return dataclasses.replace(facts, access=parse_description(text.replace(old, new, 1)))


def test_the_register_names_who_may_read_each_topic_as_the_acl_grants_it(facts):
    assert facts.access.topic_readers("user_profiles_dlq") == {"team data-engineering"}
    # analytics' DENY wins over any ALLOW it may get later: not a reader of the raw topic.
    assert facts.access.topic_readers("user_profiles") == {"application stream"}
    assert facts.access.topic_readers("analytics.events") == {"team analytics"}


def test_a_team_granted_the_dead_letters_but_not_named_by_the_register_fails(register, facts):
    granted = with_access(
        facts,
        "      - {type: group, name: analytics., pattern: prefixed, operations: [Read]}\n",
        "      - {type: group, name: analytics., pattern: prefixed, operations: [Read]}\n"
        "      - {type: topic, name: user_profiles_, pattern: prefixed, operations: [Read]}\n",
    )
    assert check(register, granted) == [
        "store kafka_dead_letter_topic: acl/access.yml lets team analytics read user_profiles_dlq, "
        "but the register does not name it among the readers"
    ]


def test_a_reader_the_register_names_but_the_acl_does_not_grant_fails(register, facts):
    revoked = with_access(
        facts, "      - {type: topic, name: user_profiles_dlq, operations: [Read, Describe]}\n", ""
    )
    assert check(register, revoked) == [
        "store kafka_dead_letter_topic: the register names team data-engineering as a reader of "
        "user_profiles_dlq, but acl/access.yml does not let it read the topic"
    ]
    assert (
        "acl/access.yml is missing or invalid" in check(register, dataclasses.replace(facts, access=None))[0]
    )


def test_check_command_passes_on_the_repository_and_fails_on_a_drifted_register(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["register", "check"])
    assert result.exit_code == 0, result.output
    assert "register agrees with the code: 34 fields" in result.stdout

    data = yaml.safe_load(DEFAULT_REGISTER.read_text(encoding="utf-8"))
    next(e for e in data["fields"] if e["fields"] == ["nat"])["treatment"] = "generalised"
    next(e for e in data["fields"] if e["fields"] == ["nat"])["columns"][0]["as"] = "generalised"
    drifted = tmp_path / "register.yaml"
    drifted.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(main, ["register", "check", "--register", str(drifted)])
    assert result.exit_code == 0  # generalised is "kept" in the code: still true

    next(e for e in data["fields"] if e["fields"] == ["nat"])["treatment"] = "dropped"
    next(e for e in data["fields"] if e["fields"] == ["nat"]).pop("columns")
    next(e for e in data["fields"] if e["fields"] == ["nat"]).pop("aggregated_in")
    next(e for e in data["fields"] if e["fields"] == ["nat"])["stored_in"] = ["kafka_topic"]
    drifted.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(main, ["register", "check", "--register", str(drifted)])
    assert result.exit_code == 1
    assert "drift: field nat: the register says 'dropped', the job treats it as 'kept'" in result.output


def test_strict_check_fails_while_placeholders_remain():
    result = CliRunner().invoke(main, ["register", "check", "--strict"])
    assert result.exit_code == 1
    assert "still to fill in (--strict)" in result.output
