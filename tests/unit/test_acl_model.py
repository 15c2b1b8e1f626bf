"""The access description: a broken file is refused with file, line and reason;
the deployment's own description grants the pipeline least privilege."""

from __future__ import annotations

from pathlib import Path

import pytest

from acl.model import (
    Acl,
    DescriptionError,
    load_description,
    normalize_operation,
    operation_arg,
    parse_description,
)

REPO_DESCRIPTION = Path(__file__).resolve().parents[2] / "acl" / "access.yml"

VALID = """\
version: 1
applications:
  producer:
    principal: User:producer
    grants:
      - {type: topic, name: user_profiles, operations: [Write, Describe]}
teams:
  analytics:
    members:
      - User:alice
    grants:
      - {type: topic, name: analytics., pattern: prefixed, operations: [Read, Describe]}
"""


def problems_of(text: str, path: str = "access.yml") -> list[str]:
    with pytest.raises(DescriptionError) as caught:
        parse_description(text, path)
    return str(caught.value).splitlines()


def test_a_valid_description_gives_each_member_the_team_grants():
    description = parse_description(VALID)
    assert description.desired_acls() == {
        Acl("User:producer", "TOPIC", "user_profiles", "LITERAL", "WRITE", "ALLOW"),
        Acl("User:producer", "TOPIC", "user_profiles", "LITERAL", "DESCRIBE", "ALLOW"),
        Acl("User:alice", "TOPIC", "analytics.", "PREFIXED", "READ", "ALLOW"),
        Acl("User:alice", "TOPIC", "analytics.", "PREFIXED", "DESCRIBE", "ALLOW"),
    }
    assert description.owners() == {"User:producer": "application producer", "User:alice": "team analytics"}


def test_unknown_operation_names_file_line_and_the_close_match():
    text = VALID.replace("operations: [Write, Describe]", "operations: [Write, Describe, Wirte]")
    assert problems_of(text) == ["access.yml:6: unknown operation 'Wirte' (did you mean 'Write'?)"]


def test_unknown_operation_without_a_close_match_lists_the_valid_ones():
    text = VALID.replace("operations: [Write, Describe]", "operations: [Publish]")
    assert problems_of(text) == [
        "access.yml:6: unknown operation 'Publish'; expected one of: All, Read, Write, Create, Delete, Alter,"
        " Describe, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, CreateTokens,"
        " DescribeTokens, TwoPhaseCommit"
    ]


def test_duplicate_principal_across_teams_names_both_lines():
    text = VALID + "  other:\n    members: [User:bob, User:alice]\n"
    (problem,) = problems_of(text)
    assert problem.startswith("access.yml:14: duplicate principal User:alice: member of team other here,")
    assert "already member of team analytics on line 10" in problem


def test_application_principal_may_not_also_be_a_team_member():
    text = VALID.replace("- User:alice", "- User:producer")
    (problem,) = problems_of(text)
    assert problem.startswith("access.yml:10: duplicate principal User:producer")


def test_typo_in_resource_type_is_refused_with_a_suggestion():
    text = VALID.replace("{type: topic, name: analytics.", "{type: topci, name: analytics.")
    assert problems_of(text) == [
        "access.yml:12: unknown resource type 'topci' (did you mean 'topic'?);"
        " expected one of: topic, group, transactional_id, cluster"
    ]


def test_typo_in_a_key_is_refused():
    text = VALID.replace("members:", "membres:")
    (problem,) = problems_of(text)
    assert problem.startswith(
        "access.yml:9: unknown key 'membres' in team analytics (did you mean 'members'?)"
    )


def test_every_problem_is_reported_at_once_in_line_order():
    text = VALID.replace("Write, Describe", "Write, Raed").replace("User:alice", "alice")
    problems = problems_of(text)
    assert [problem.split(":")[1] for problem in problems] == ["6", "10"]
    assert "'alice' is not a principal: write User:<name>" in problems[1]


def test_operation_that_does_not_apply_to_the_resource_type_is_refused():
    text = VALID.replace(
        "{type: topic, name: user_profiles, operations: [Write, Describe]}",
        "{type: group, name: g, operations: [Write]}",
    )
    (problem,) = problems_of(text)
    assert problem.startswith(
        "access.yml:6: operation Write does not apply to a group; it takes: All, AlterConfigs"
    )


@pytest.mark.parametrize(
    ("grant", "reason"),
    [
        (
            "{type: cluster, pattern: prefixed, operations: [Describe]}",
            "the cluster resource cannot be prefixed",
        ),
        ("{type: topic, name: '*', pattern: prefixed, operations: [Read]}", "'*' means every resource"),
        ("{type: topic, name: 'a topic', operations: [Read]}", "'a topic' is not a topic name"),
        (
            "{type: topic, name: t, operations: [Read], host: kafka1}",
            "host 'kafka1' must be '*' or an IP address",
        ),
        ("{type: topic, name: t, operations: [Read], permission: forbid}", "unknown permission 'forbid'"),
        ("{type: topic, name: t, operations: []}", "operations must not be empty"),
        ("{type: topic, name: t, operations: [Read, READ]}", "operation Read is listed twice"),
        ("{type: topic, operations: [Read]}", "missing 'name'"),
        ("{name: t, operations: [Read]}", "missing 'type'"),
    ],
)
def test_invalid_grants_are_refused_with_the_reason(grant, reason):
    text = VALID.replace("{type: topic, name: user_profiles, operations: [Write, Describe]}", grant)
    (problem,) = problems_of(text)
    assert problem.startswith("access.yml:6: ")
    assert reason in problem


def test_two_grants_on_the_same_resource_must_be_merged():
    text = VALID.replace(
        "      - {type: topic, name: user_profiles, operations: [Write, Describe]}\n",
        "      - {type: topic, name: user_profiles, operations: [Write]}\n"
        "      - {type: topic, name: user_profiles, operations: [Describe]}\n",
    )
    (problem,) = problems_of(text)
    assert problem.startswith(
        "access.yml:7: application producer already has a grant on this topic user_profiles"
    )


def test_wildcard_principals_are_not_least_privilege():
    (problem,) = problems_of(VALID.replace("User:alice", "User:*"))
    assert "access.yml:10: 'User:*' is not a principal" in problem


def test_yaml_syntax_error_names_the_line():
    (problem,) = problems_of(VALID.replace("    members:\n", "    members: [\n"))
    assert problem.startswith("access.yml:")
    assert "not valid YAML" in problem


def test_missing_version_and_unknown_top_level_key():
    problems = problems_of(VALID.replace("version: 1\n", "verison: 1\n"))
    assert any("unknown key 'verison' in the description (did you mean 'version'?)" in p for p in problems)
    assert any("missing 'version: 1'" in p for p in problems)


def test_offboarded_principal_cannot_stay_a_member():
    (problem,) = problems_of(VALID + "offboarded: [User:alice]\n")
    assert problem.startswith("access.yml:13: duplicate principal User:alice: offboarded here")


def test_missing_file_is_a_description_error_not_a_traceback(tmp_path):
    with pytest.raises(DescriptionError, match="file not found"):
        load_description(tmp_path / "absent.yml")


@pytest.mark.parametrize(
    ("written", "kafka"),
    [
        ("Read", "READ"),
        ("IdempotentWrite", "IDEMPOTENT_WRITE"),
        ("describe_configs", "DESCRIBE_CONFIGS"),
        ("Raed", None),
    ],
)
def test_operations_are_read_as_written_in_the_kafka_docs(written, kafka):
    assert normalize_operation(written) == kafka


def test_operation_argument_is_the_kafka_acls_spelling():
    assert operation_arg("DESCRIBE_CONFIGS") == "DescribeConfigs"
    assert operation_arg("READ") == "Read"


# --- the deployment's description ----------------------------------------------------------


def test_repository_description_is_valid():
    description = load_description(REPO_DESCRIPTION)
    assert {"producer", "stream"} <= set(description.applications)
    assert description.teams, "move-member needs at least one team with a member"


def _acls_of(principal: str) -> set[tuple[str, str, str, str, str]]:
    description = load_description(REPO_DESCRIPTION)
    return {
        (acl.permission, acl.operation, acl.resource_type, acl.name, acl.pattern)
        for acl in description.desired_acls()
        if acl.principal == principal
    }


def test_producer_may_only_write_and_describe_the_profiles_topic():
    assert _acls_of("User:producer") == {
        ("ALLOW", "WRITE", "TOPIC", "user_profiles", "LITERAL"),
        ("ALLOW", "DESCRIBE", "TOPIC", "user_profiles", "LITERAL"),
    }


def test_stream_job_reads_profiles_with_its_group_prefix_and_writes_the_dead_letter_topic():
    assert _acls_of("User:stream") == {
        ("ALLOW", "READ", "TOPIC", "user_profiles", "LITERAL"),
        ("ALLOW", "DESCRIBE", "TOPIC", "user_profiles", "LITERAL"),
        ("ALLOW", "READ", "GROUP", "user-profiles-stream", "PREFIXED"),
        ("ALLOW", "WRITE", "TOPIC", "user_profiles_dlq", "LITERAL"),
        ("ALLOW", "DESCRIBE", "TOPIC", "user_profiles_dlq", "LITERAL"),
    }


def test_super_users_are_not_managed_by_the_description():
    managed = load_description(REPO_DESCRIPTION).managed_principals()
    assert "User:admin" not in managed
    assert "User:controller" not in managed


def test_no_team_may_read_the_raw_profiles():
    description = load_description(REPO_DESCRIPTION)
    readers = {
        acl.principal
        for acl in description.desired_acls()
        if acl.name == "user_profiles" and acl.operation in {"READ", "ALL"} and acl.permission == "ALLOW"
    }
    assert readers == {"User:stream"}
