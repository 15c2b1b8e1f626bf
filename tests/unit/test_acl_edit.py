"""The org-change shortcuts edit the description: the intended model, the rest of the
file (comments, layout) kept, errors for changes that make no sense."""

from __future__ import annotations

from pathlib import Path

import pytest

from acl import edit
from acl.model import Acl, parse_description

PATH = Path("access.yml")

TEXT = """\
---
# Access for the lab cluster.
version: 1

applications:
  producer:
    principal: User:producer
    grants:
      - {type: topic, name: user_profiles, operations: [Write, Describe]}  # the only writer

teams:
  data-engineering:
    description: runs the pipeline
    members:
      - User:dana   # on call
    grants:
      - {type: topic, name: user_profiles_dlq, operations: [Read, Describe]}

  analytics:
    members:
      - User:alice
      - User:bob
    grants:
      - type: topic
        name: analytics.
        pattern: prefixed
        operations: [Read, Describe]
      # raw profiles stay out of reach
      - {type: topic, name: user_profiles, operations: [Read], permission: deny}

offboarded: []
"""


def members(text: str, team: str) -> tuple[str, ...]:
    return parse_description(text).teams[team].members


def test_move_member_changes_only_the_two_member_lists():
    result = edit.move_member(TEXT, PATH, "User:alice", "analytics", "data-engineering")
    assert members(result.text, "analytics") == ("User:bob",)
    assert members(result.text, "data-engineering") == ("User:dana", "User:alice")
    expected = TEXT.replace("      - User:alice\n", "").replace(
        "      - User:dana   # on call\n", "      - User:dana   # on call\n      - User:alice\n"
    )
    assert result.text == expected
    assert result.message == "moved User:alice from team analytics to team data-engineering"


def test_moved_member_gets_the_new_team_rights_and_loses_the_old():
    result = edit.move_member(TEXT, PATH, "User:alice", "analytics", "data-engineering")
    rights = {a for a in result.description.desired_acls() if a.principal == "User:alice"}
    assert rights == {
        Acl("User:alice", "TOPIC", "user_profiles_dlq", "LITERAL", "READ", "ALLOW"),
        Acl("User:alice", "TOPIC", "user_profiles_dlq", "LITERAL", "DESCRIBE", "ALLOW"),
    }


def test_moving_the_last_member_leaves_an_empty_list():
    result = edit.move_member(TEXT, PATH, "User:dana", "data-engineering", "analytics")
    assert "    members: []\n" in result.text
    assert members(result.text, "data-engineering") == ()
    assert members(result.text, "analytics") == ("User:alice", "User:bob", "User:dana")


def test_move_member_into_an_empty_team_makes_a_block_list():
    emptied = edit.move_member(TEXT, PATH, "User:dana", "data-engineering", "analytics").text
    result = edit.move_member(emptied, PATH, "User:bob", "analytics", "data-engineering")
    assert "    members:\n      - User:bob\n" in result.text
    assert "(file rewritten" not in result.message


def test_flow_style_member_lists_are_edited_in_place():
    text = TEXT.replace(
        "    members:\n      - User:alice\n      - User:bob\n", "    members: [User:alice, User:bob]\n"
    )
    result = edit.move_member(text, PATH, "User:bob", "analytics", "data-engineering")
    assert "    members: [User:alice]\n" in result.text
    assert members(result.text, "data-engineering") == ("User:dana", "User:bob")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("User:carol", "analytics", "data-engineering"), "User:carol is not a member of team analytics"),
        (("User:dana", "analytics", "data-engineering"), "User:dana is not a member of team analytics"),
        (("User:alice", "analytics", "sales"), "no team 'sales'"),
        (("User:alice", "analytics", "analytics"), "already in team analytics"),
        (("alice", "analytics", "data-engineering"), "'alice' is not a principal"),
    ],
)
def test_move_member_refuses_changes_that_make_no_sense(args, error):
    with pytest.raises(edit.EditError, match=error):
        edit.move_member(TEXT, PATH, *args)


def test_offboard_moves_a_member_to_offboarded_with_a_note():
    result = edit.offboard(TEXT, PATH, "User:bob", note="left 2026-11-27")
    assert members(result.text, "analytics") == ("User:alice",)
    assert result.description.offboarded == ("User:bob",)
    assert result.text.endswith("offboarded:\n  - User:bob  # left 2026-11-27\n")
    assert "# raw profiles stay out of reach" in result.text


def test_offboarding_twice_changes_nothing():
    once = edit.offboard(TEXT, PATH, "User:bob").text
    again = edit.offboard(once, PATH, "User:bob")
    assert not again.changed
    assert again.text == once


def test_offboard_an_application_removes_its_entry():
    result = edit.offboard(TEXT, PATH, "User:producer")
    assert result.description.applications == {}
    assert result.description.offboarded == ("User:producer",)
    assert "User:producer" not in {a.principal for a in result.description.desired_acls()}


def test_offboard_a_principal_not_in_the_file_still_manages_its_removal():
    result = edit.offboard(TEXT, PATH, "User:legacy")
    assert result.description.offboarded == ("User:legacy",)
    assert "not in the description before" in result.message


def test_add_member_brings_back_an_offboarded_principal():
    offboarded = edit.offboard(TEXT, PATH, "User:bob").text
    result = edit.add_member(offboarded, PATH, "User:bob", "data-engineering")
    assert result.description.offboarded == ()
    assert members(result.text, "data-engineering") == ("User:dana", "User:bob")


def test_add_member_refuses_a_principal_of_another_team():
    with pytest.raises(
        edit.EditError, match="already in the description \\(team analytics\\); use move-member"
    ):
        edit.add_member(TEXT, PATH, "User:alice", "data-engineering")


def test_grant_appends_a_new_grant_as_one_line():
    spec = {"type": "group", "name": "analytics.", "pattern": "prefixed", "operations": ["Read"]}
    result = edit.grant(TEXT, PATH, "analytics", spec)
    assert "      - {type: group, name: analytics., pattern: prefixed, operations: [Read]}\n" in result.text
    assert len(result.description.teams["analytics"].grants) == 3
    assert result.message == "granted Read on group analytics. (prefixed) to team analytics"


def test_grant_on_an_existing_resource_adds_the_missing_operations():
    spec = {"type": "topic", "name": "user_profiles_dlq", "operations": ["Describe", "DescribeConfigs"]}
    result = edit.grant(TEXT, PATH, "data-engineering", spec)
    (grant,) = result.description.teams["data-engineering"].grants
    assert grant.operations == ("READ", "DESCRIBE", "DESCRIBE_CONFIGS")
    assert (
        result.message
        == "granted DescribeConfigs on topic user_profiles_dlq (literal) to team data-engineering"
    )


def test_grant_that_is_already_there_changes_nothing():
    spec = {"type": "topic", "name": "user_profiles_dlq", "operations": ["Read"]}
    result = edit.grant(TEXT, PATH, "data-engineering", spec)
    assert not result.changed
    assert result.text == TEXT


def test_grant_with_an_invalid_operation_is_refused():
    spec = {"type": "group", "name": "g", "operations": ["Write"]}
    with pytest.raises(edit.EditError, match="Write does not apply to a group"):
        edit.grant(TEXT, PATH, "analytics", spec)


def test_revoke_some_operations_rewrites_that_grant_only():
    spec = {"type": "topic", "name": "analytics.", "pattern": "prefixed", "operations": ["Describe"]}
    result = edit.revoke(TEXT, PATH, "analytics", spec)
    grant = result.description.teams["analytics"].grants[0]
    assert grant.operations == ("READ",)
    assert "      - {type: topic, name: analytics., pattern: prefixed, operations: [Read]}\n" in result.text
    assert "# raw profiles stay out of reach" in result.text


def test_revoke_without_operations_removes_the_whole_grant():
    spec = {"type": "topic", "name": "user_profiles", "permission": "deny", "operations": []}
    result = edit.revoke(TEXT, PATH, "analytics", spec)
    assert [g.permission for g in result.description.teams["analytics"].grants] == ["ALLOW"]
    assert "permission: deny" not in result.text


def test_revoke_of_a_grant_the_team_does_not_have_is_an_error():
    with pytest.raises(edit.EditError, match="team analytics has no grant on topic user_profiles_dlq"):
        edit.revoke(TEXT, PATH, "analytics", {"type": "topic", "name": "user_profiles_dlq", "operations": []})


def test_shapes_the_minimal_edit_cannot_handle_fall_back_to_the_normal_form():
    text = TEXT.replace(
        "    members:\n      - User:alice\n      - User:bob\n", "    members: [User:alice,\n      User:bob]\n"
    )
    result = edit.move_member(text, PATH, "User:bob", "analytics", "data-engineering")
    assert result.message.endswith("(file rewritten in normal form)")
    assert result.text.startswith("---\n# Access for the lab cluster.\nversion: 1\n")
    reparsed = parse_description(result.text)
    assert reparsed.to_yaml() == result.description.to_yaml()
    assert members(result.text, "data-engineering") == ("User:dana", "User:bob")


def test_normal_form_reads_back_as_the_same_description():
    description = parse_description(TEXT)
    assert parse_description(edit.render_description(description)).to_yaml() == description.to_yaml()


def test_write_atomically_keeps_the_file_mode(tmp_path):
    target = tmp_path / "access.yml"
    target.write_text(TEXT)
    target.chmod(0o640)
    edit.write_atomically(target, "version: 1\n")
    assert target.read_text() == "version: 1\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["access.yml"]


def test_offboarding_the_only_application_leaves_an_empty_mapping():
    result = edit.offboard(TEXT, PATH, "User:producer")
    assert "(file rewritten" not in result.message
    assert "applications: {}\n\nteams:\n" in result.text
    assert "      - User:dana   # on call\n" in result.text


def test_revoking_a_grant_takes_the_comment_right_above_it_along():
    spec = {"type": "topic", "name": "user_profiles", "permission": "deny", "operations": []}
    result = edit.revoke(TEXT, PATH, "analytics", spec)
    assert "# raw profiles stay out of reach" not in result.text
    assert "        operations: [Read, Describe]\n\noffboarded: []\n" in result.text
