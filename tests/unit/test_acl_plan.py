"""Reading `kafka-acls.sh --list` and planning: exactly the described ACLs for managed
principals, prefixed and DENY entries kept apart, other principals left alone."""

# ruff: noqa: E501 - the captured kafka-acls.sh output is kept verbatim

from __future__ import annotations

import pytest

from acl.kafka import acl_args, acl_batches, error_summary
from acl.listing import ListingError, parse_acl_listing, parse_scram_users
from acl.model import Acl, parse_description
from acl.plan import Credential, compute_plan, plan_to_dict, render_plan

# Captured from kafka-acls.sh --list (Kafka 4.4.0, StandardAuthorizer): the order is the
# broker's, a tab before each entry, a blank line after each resource.
LIVE_LISTING = """\
Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=odd topic, patternType=LITERAL)`:
\t(principal=User:we ird,name=x), host=*, operation=DESCRIBE, permissionType=ALLOW)

Current ACLs for resource `ResourcePattern(resourceType=CLUSTER, name=kafka-cluster, patternType=LITERAL)`:
\t(principal=User:producer, host=*, operation=IDEMPOTENT_WRITE, permissionType=ALLOW)

Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=user_profiles, patternType=LITERAL)`:
\t(principal=User:producer, host=*, operation=WRITE, permissionType=ALLOW)
\t(principal=User:producer, host=*, operation=DESCRIBE, permissionType=ALLOW)

Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=user-profiles-stream, patternType=PREFIXED)`:
\t(principal=User:stream, host=*, operation=READ, permissionType=ALLOW)

Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=analytics., patternType=PREFIXED)`:
\t(principal=User:bob, host=10.0.0.5, operation=READ, permissionType=DENY)

"""

DESCRIPTION = """\
version: 1
applications:
  producer:
    principal: User:producer
    grants:
      - {type: topic, name: user_profiles, operations: [Write, Describe]}
  stream:
    principal: User:stream
    grants:
      - {type: group, name: user-profiles-stream, pattern: prefixed, operations: [Read]}
teams:
  analytics:
    members: [User:alice]
    grants:
      - {type: topic, name: analytics., pattern: prefixed, operations: [Read]}
      - {type: topic, name: user_profiles, operations: [Read], permission: deny}
"""


def acl(principal, resource_type, name, pattern, operation, permission="ALLOW", host="*"):
    return Acl(principal, resource_type, name, pattern, operation, permission, host)


# --- parsing the listing ------------------------------------------------------------------


def test_listing_parses_literal_prefixed_cluster_and_deny_entries():
    assert parse_acl_listing(LIVE_LISTING) == {
        acl("User:we ird,name=x)", "TOPIC", "odd topic", "LITERAL", "DESCRIBE"),
        acl("User:producer", "CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"),
        acl("User:producer", "TOPIC", "user_profiles", "LITERAL", "WRITE"),
        acl("User:producer", "TOPIC", "user_profiles", "LITERAL", "DESCRIBE"),
        acl("User:stream", "GROUP", "user-profiles-stream", "PREFIXED", "READ"),
        acl("User:bob", "TOPIC", "analytics.", "PREFIXED", "READ", "DENY", "10.0.0.5"),
    }


def test_listing_of_an_empty_cluster_is_empty():
    assert parse_acl_listing("") == set()


def test_listing_filtered_by_principal_has_a_header_that_is_skipped():
    text = (
        "ACLs for principal `User:producer`\n"
        "Current ACLs for resource `ResourcePattern(resourceType=TRANSACTIONAL_ID, name=tx-1, patternType=LITERAL)`:\n"
        "\t(principal=User:producer, host=*, operation=WRITE, permissionType=ALLOW)\n\n"
    )
    assert parse_acl_listing(text) == {acl("User:producer", "TRANSACTIONAL_ID", "tx-1", "LITERAL", "WRITE")}


def test_unexpected_listing_output_stops_the_plan():
    with pytest.raises(ListingError, match="line 8: unexpected output"):
        parse_acl_listing(
            LIVE_LISTING.replace("\t(principal=User:producer, host=*, operation=WRITE", "\t(who=x")
        )


def test_entry_without_a_resource_header_is_refused():
    with pytest.raises(ListingError, match="before any resource"):
        parse_acl_listing("\t(principal=User:a, host=*, operation=READ, permissionType=ALLOW)\n")


def test_scram_users_with_one_or_two_mechanisms():
    text = (
        "SCRAM credential configs for user-principal 'carol' are SCRAM-SHA-512=iterations=8192,"
        " SCRAM-SHA-256=iterations=8192\n"
        "SCRAM credential configs for user-principal 'admin' are SCRAM-SHA-512=iterations=4096\n"
    )
    assert parse_scram_users(text) == {
        "carol": ("SCRAM-SHA-512", "SCRAM-SHA-256"),
        "admin": ("SCRAM-SHA-512",),
    }


# --- the diff -------------------------------------------------------------------------------


def test_plan_adds_what_is_missing_and_removes_only_managed_extras():
    plan = compute_plan(parse_description(DESCRIPTION), parse_acl_listing(LIVE_LISTING))
    assert set(plan.add) == {
        acl("User:alice", "TOPIC", "analytics.", "PREFIXED", "READ"),
        acl("User:alice", "TOPIC", "user_profiles", "LITERAL", "READ", "DENY"),
    }
    # The producer is managed: its cluster ACL is not described, so it goes.
    assert plan.remove == (acl("User:producer", "CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"),)
    assert {a.principal for a in plan.unmanaged} == {"User:bob", "User:we ird,name=x)"}
    assert plan.changed


def test_plan_after_apply_is_empty():
    description = parse_description(DESCRIPTION)
    live = parse_acl_listing(LIVE_LISTING)
    first = compute_plan(description, live)
    after = (live - set(first.remove)) | set(first.add)
    second = compute_plan(description, after)
    assert not second.changed
    assert second.add == second.remove == ()


def test_prefixed_and_literal_patterns_are_different_acls():
    description = parse_description(DESCRIPTION)
    live = {acl("User:alice", "TOPIC", "analytics.", "LITERAL", "READ")}
    plan = compute_plan(description, live)
    assert acl("User:alice", "TOPIC", "analytics.", "LITERAL", "READ") in plan.remove
    assert acl("User:alice", "TOPIC", "analytics.", "PREFIXED", "READ") in plan.add


def test_an_allow_does_not_satisfy_a_described_deny():
    description = parse_description(DESCRIPTION)
    live = {acl("User:alice", "TOPIC", "user_profiles", "LITERAL", "READ", "ALLOW")}
    plan = compute_plan(description, live)
    assert acl("User:alice", "TOPIC", "user_profiles", "LITERAL", "READ", "ALLOW") in plan.remove
    assert acl("User:alice", "TOPIC", "user_profiles", "LITERAL", "READ", "DENY") in plan.add


def test_live_deny_of_a_managed_principal_that_is_not_described_is_removed():
    description = parse_description(DESCRIPTION)
    stray = acl("User:stream", "TOPIC", "user_profiles", "LITERAL", "READ", "DENY", "10.1.2.3")
    plan = compute_plan(description, {stray})
    assert stray in plan.remove


def test_acl_on_a_different_host_is_not_the_described_acl():
    description = parse_description(DESCRIPTION)
    other_host = acl("User:stream", "GROUP", "user-profiles-stream", "PREFIXED", "READ", host="10.0.0.9")
    plan = compute_plan(description, {other_host})
    assert other_host in plan.remove
    assert acl("User:stream", "GROUP", "user-profiles-stream", "PREFIXED", "READ") in plan.add


def test_principals_outside_the_description_are_never_removed():
    description = parse_description(DESCRIPTION)
    foreign = {
        acl("User:legacy", "TOPIC", "user_profiles", "LITERAL", "READ"),
        acl("User:*", "TOPIC", "*", "LITERAL", "DESCRIBE"),
    }
    plan = compute_plan(description, foreign)
    assert not set(plan.remove) & foreign
    assert set(plan.unmanaged) == foreign


def test_offboarded_principal_loses_its_acls_and_every_scram_credential():
    text = DESCRIPTION.replace("members: [User:alice]", "members: []") + "offboarded: [User:alice]\n"
    description = parse_description(text)
    live = {acl("User:alice", "TOPIC", "analytics.", "PREFIXED", "READ")}
    scram = {"alice": ("SCRAM-SHA-512", "SCRAM-SHA-256"), "admin": ("SCRAM-SHA-512",)}
    plan = compute_plan(description, live, scram)
    assert plan.remove == (acl("User:alice", "TOPIC", "analytics.", "PREFIXED", "READ"),)
    assert plan.add == tuple(a for a in plan.add if a.principal != "User:alice")
    assert plan.delete_credentials == (
        Credential("User:alice", "SCRAM-SHA-256"),
        Credential("User:alice", "SCRAM-SHA-512"),
    )
    # Once gone, nothing more to do for alice.
    assert not compute_plan(description, set(), {"admin": ("SCRAM-SHA-512",)}).delete_credentials


def test_fingerprint_identifies_the_changes():
    description = parse_description(DESCRIPTION)
    live = parse_acl_listing(LIVE_LISTING)
    assert compute_plan(description, live).fingerprint == compute_plan(description, set(live)).fingerprint
    assert compute_plan(description, live).fingerprint != compute_plan(description, set()).fingerprint


def test_plan_json_is_the_ansible_contract():
    plan = compute_plan(parse_description(DESCRIPTION), parse_acl_listing(LIVE_LISTING))
    data = plan_to_dict(plan, applied=False)
    assert data["changed"] is True
    assert data["applied"] is False
    assert {"fingerprint", "added", "removed", "credentials_deleted", "unmanaged", "summary"} <= set(data)
    assert data["removed"] == [
        {
            "principal": "User:producer",
            "permission": "ALLOW",
            "operation": "IDEMPOTENT_WRITE",
            "resource_type": "CLUSTER",
            "name": "kafka-cluster",
            "pattern": "LITERAL",
            "host": "*",
        }
    ]


def test_rendered_plan_groups_adds_and_removes_per_principal():
    description = parse_description(DESCRIPTION)
    text = render_plan(compute_plan(description, parse_acl_listing(LIVE_LISTING)), description)
    assert text.splitlines()[:3] == [
        "User:alice (team analytics)",
        "  + ALLOW READ on topic analytics. (prefixed) from *",
        "  + DENY READ on topic user_profiles (literal) from *",
    ]
    assert "User:producer (application producer)\n  - ALLOW IDEMPOTENT_WRITE on cluster kafka-cluster" in text
    assert "Plan: 2 to add, 1 to remove, 0 SCRAM credential(s) to delete." in text
    assert "Left alone (principals not in the description): User:bob (1), User:we ird,name=x) (1)" in text


# --- kafka-acls.sh calls ----------------------------------------------------------------------


def test_team_members_with_the_same_grant_share_one_kafka_acls_call():
    acls = [
        acl(member, "TOPIC", "analytics.", "PREFIXED", operation)
        for member in ("User:alice", "User:bob")
        for operation in ("READ", "DESCRIBE")
    ]
    (batch,) = acl_batches(acls)
    assert acl_args(batch) == [
        "--allow-principal",
        "User:alice",
        "--allow-principal",
        "User:bob",
        "--allow-host",
        "*",
        "--operation",
        "Describe",
        "--operation",
        "Read",
        "--topic",
        "analytics.",
        "--resource-pattern-type",
        "PREFIXED",
    ]


def test_batches_never_grant_more_than_asked():
    acls = [
        acl("User:alice", "TOPIC", "t", "LITERAL", "READ"),
        acl("User:alice", "TOPIC", "t", "LITERAL", "DESCRIBE"),
        acl("User:bob", "TOPIC", "t", "LITERAL", "READ"),
        acl("User:bob", "GROUP", "g", "PREFIXED", "READ"),
        acl("User:bob", "TOPIC", "u", "LITERAL", "READ", "DENY"),
        acl("User:carol", "CLUSTER", "kafka-cluster", "LITERAL", "DESCRIBE"),
    ]
    batches = acl_batches(acls)
    assert sorted(a for batch in batches for a in batch) == sorted(acls)
    deny_args = next(acl_args(b) for b in batches if b[0].permission == "DENY")
    assert deny_args[:4] == ["--deny-principal", "User:bob", "--deny-host", "*"]
    cluster_args = next(acl_args(b) for b in batches if b[0].resource_type == "CLUSTER")
    assert "--cluster" in cluster_args


def test_a_batch_that_is_not_a_product_is_refused():
    with pytest.raises(ValueError, match="every principal x operation x resource"):
        acl_args(
            [
                acl("User:alice", "TOPIC", "t", "LITERAL", "READ"),
                acl("User:bob", "TOPIC", "t", "LITERAL", "DESCRIBE"),
            ]
        )


def test_tool_error_summary_is_the_cause_not_the_stack_trace():
    stderr = (
        "Error while executing ACL command: org.apache.kafka.common.errors.SaslAuthenticationException: x\n"
        "java.util.concurrent.ExecutionException: ...\n\tat java.base/...\n"
        "Caused by: org.apache.kafka.common.errors.SaslAuthenticationException: Authentication failed\n"
    )
    assert (
        error_summary("", stderr)
        == "org.apache.kafka.common.errors.SaslAuthenticationException: Authentication failed"
    )
