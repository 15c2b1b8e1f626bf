"""bdf-acl plumbing through CliRunner, against fake kafka-acls.sh / kafka-configs.sh scripts
that keep their ACLs in a JSON file and print what the real tools print.

The real-cluster behaviour (authorization failures seen by clients, offboarded users
refused) is tests/integration/test_acl_kafka.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from acl.cli import EXIT_CHANGES, EXIT_USAGE, cli

FAKE_TOOL = r'''#!{python}
"""Fake Kafka tool: state in $FAKE_KAFKA_STATE, every argv appended to $FAKE_KAFKA_LOG."""
import json, os, re, sys
from pathlib import Path

tool, args = Path(sys.argv[0]).name, sys.argv[1:]
state_path = Path(os.environ["FAKE_KAFKA_STATE"])
state = json.loads(state_path.read_text())
config = Path(args[args.index("--command-config") + 1])
config_text = config.read_text()
with open(os.environ["FAKE_KAFKA_LOG"], "a") as log:
    log.write(json.dumps({{"tool": tool, "argv": args, "config_mode": oct(config.stat().st_mode & 0o777),
                          "config_user": re.search(r'username="([^"]*)"', config_text).group(1)}}) + "\n")
fail_on = os.environ.get("FAKE_KAFKA_FAIL_ON")
if fail_on and fail_on in args:
    print("Error while executing ACL command: boom", file=sys.stderr)
    print("Caused by: org.apache.kafka.common.errors.TimeoutException: simulated", file=sys.stderr)
    sys.exit(1)

def values(flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]

def snake(op):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).upper()

if tool == "kafka-cluster.sh":
    print("Cluster ID: fake-cluster-id")
elif tool == "kafka-configs.sh":
    if "--describe" in args:
        for user, mechanisms in state["scram"].items():
            configs = ", ".join(f"{{m}}=iterations=8192" for m in mechanisms)
            print(f"SCRAM credential configs for user-principal '{{user}}' are {{configs}}")
    else:
        user, mechanism = values("--entity-name")[0], values("--delete-config")[0]
        if mechanism not in state["scram"].get(user, []):
            print("Caused by: ResourceNotFoundException: no credential", file=sys.stderr)
            sys.exit(1)
        state["scram"][user].remove(mechanism)
        if not state["scram"][user]:
            del state["scram"][user]
        print(f"Completed updating config for user {{user}}.")
elif "--list" in args:
    resources = {{}}
    for acl in state["acls"]:
        resources.setdefault(tuple(acl[:3]), []).append(acl[3:])
    for (rtype, name, pattern), entries in resources.items():
        pattern_text = f"ResourcePattern(resourceType={{rtype}}, name={{name}}, patternType={{pattern}})"
        print(f"Current ACLs for resource `{{pattern_text}}`:")
        for principal, host, op, permission in entries:
            entry = f"principal={{principal}}, host={{host}}, operation={{op}}, permissionType={{permission}}"
            print(f"\t({{entry}})")
        print()
else:
    side = "allow" if values("--allow-principal") else "deny"
    principals, hosts = values(f"--{{side}}-principal"), values(f"--{{side}}-host") or ["*"]
    pattern = (values("--resource-pattern-type") or ["LITERAL"])[0].upper()
    resources = [("TOPIC", t) for t in values("--topic")] + [("GROUP", g) for g in values("--group")]
    resources += [("TRANSACTIONAL_ID", t) for t in values("--transactional-id")]
    resources += [("CLUSTER", "kafka-cluster")] if "--cluster" in args else []
    wanted = [[rtype, name, pattern, principal, host, snake(op), side.upper()]
              for rtype, name in resources for principal in principals for host in hosts
              for op in values("--operation")]
    if "--add" in args:
        state["acls"] += [acl for acl in wanted if acl not in state["acls"]]
    else:
        state["acls"] = [acl for acl in state["acls"] if acl not in wanted]
state_path.write_text(json.dumps(state))
'''

DESCRIPTION = """\
# test description
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
      - {type: topic, name: user_profiles, operations: [Read], permission: deny}
  data-engineering:
    members:
      - User:dana
    grants:
      - {type: topic, name: user_profiles_dlq, operations: [Read]}
offboarded: []
"""

ADMIN_PASSWORD = "s3cret-admin-pw"


class Fake:
    """The fake Kafka installation and the bdf-acl invocation around it."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "kafka" / "bin"
        self.bin.mkdir(parents=True)
        for tool in ("kafka-acls.sh", "kafka-configs.sh", "kafka-cluster.sh"):
            script = self.bin / tool
            script.write_text(FAKE_TOOL.format(python=sys.executable))
            script.chmod(0o755)
        self.state = tmp_path / "state.json"
        self.log = tmp_path / "calls.jsonl"
        self.audit = tmp_path / "audit" / "acl-audit.jsonl"
        self.file = tmp_path / "access.yml"
        self.file.write_text(DESCRIPTION)
        self.config = tmp_path / "admin-client.properties"
        self.config.write_text(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="admin" password="{ADMIN_PASSWORD}";\n'
        )
        self.set_state(acls=[], scram={"admin": ["SCRAM-SHA-512"]})
        self.env = {"FAKE_KAFKA_STATE": str(self.state), "FAKE_KAFKA_LOG": str(self.log)}

    def set_state(self, acls: list[list[str]], scram: dict[str, list[str]]) -> None:
        self.state.write_text(json.dumps({"acls": acls, "scram": scram}))

    def acls(self) -> list[list[str]]:
        return json.loads(self.state.read_text())["acls"]

    def scram(self) -> dict[str, list[str]]:
        return json.loads(self.state.read_text())["scram"]

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def run(
        self, *args: str, config: bool = True, env: dict[str, str] | None = None, input: str | None = None
    ):
        base = [
            "--file",
            str(self.file),
            "--bootstrap-server",
            "127.0.0.1:9092",
            "--kafka-bin",
            str(self.bin),
            "--audit-log",
            str(self.audit),
        ]
        if config:
            base += ["--command-config", str(self.config)]
        return CliRunner().invoke(cli, [*base, *args], env={**self.env, **(env or {})}, input=input)


@pytest.fixture()
def fake(tmp_path) -> Fake:
    return Fake(tmp_path)


def json_of(result) -> dict:
    return json.loads(result.stdout)


def test_plan_detailed_exitcode_is_2_with_changes_and_0_without(fake):
    result = fake.run("plan", "--detailed-exitcode")
    assert result.exit_code == EXIT_CHANGES, result.output
    assert (
        "User:alice (team analytics)\n  + ALLOW DESCRIBE on topic analytics. (prefixed) from *"
        in result.stdout
    )
    assert fake.run("apply", "--yes").exit_code == 0
    assert fake.run("plan", "--detailed-exitcode").exit_code == 0


def test_plan_without_detailed_exitcode_succeeds_even_with_changes(fake):
    assert fake.run("plan").exit_code == 0


def test_apply_json_reports_changed_then_a_second_apply_does_nothing(fake):
    first = fake.run("--output", "json", "apply", "--yes")
    assert first.exit_code == 0, first.output
    report = json_of(first)
    assert report["changed"] is True
    assert report["applied"] is True
    assert len(report["added"]) == 6
    assert report["removed"] == []
    second = fake.run("--output", "json", "apply", "--yes")
    assert second.exit_code == 0
    assert json_of(second)["changed"] is False
    adds = [c for c in fake.calls() if "--add" in c["argv"]]
    assert len(adds) == 4  # one kafka-acls.sh call per grant, operations together


def test_apply_removes_stray_acls_of_managed_principals_only(fake):
    fake.set_state(
        acls=[
            ["TOPIC", "user_profiles", "LITERAL", "User:alice", "*", "WRITE", "ALLOW"],
            ["TOPIC", "user_profiles", "LITERAL", "User:legacy", "*", "READ", "ALLOW"],
        ],
        scram={},
    )
    report = json_of(fake.run("--output", "json", "apply", "--yes"))
    assert [(a["principal"], a["operation"]) for a in report["removed"]] == [("User:alice", "WRITE")]
    assert ["TOPIC", "user_profiles", "LITERAL", "User:legacy", "*", "READ", "ALLOW"] in fake.acls()
    assert [a["principal"] for a in report["unmanaged"]] == ["User:legacy"]


def test_apply_asks_first_and_no_changes_nothing(fake):
    result = fake.run("apply", input="n\n")
    assert result.exit_code == 1
    assert "Apply these changes to 127.0.0.1:9092? [y/N]" in result.stderr
    assert "Aborted: nothing was changed." in result.stderr
    assert fake.acls() == []
    assert not any("--add" in call["argv"] for call in fake.calls())


def test_apply_asks_first_and_yes_applies(fake):
    result = fake.run("apply", input="y\n")
    assert result.exit_code == 0, result.output
    assert len(fake.acls()) == 6


def test_broken_description_names_the_line_and_never_calls_kafka(fake):
    fake.file.write_text(DESCRIPTION.replace("[Read, Describe]", "[Read, Dscribe]"))
    result = fake.run("--output", "json", "apply", "--yes")
    assert result.exit_code == 1
    assert f"{fake.file}:13: unknown operation 'Dscribe' (did you mean 'Describe'?)" in result.stderr
    report = json_of(result)
    assert report["changed"] is False
    assert report["problems"][0]["line"] == 13
    assert fake.calls() == []
    assert not fake.audit.exists()


def test_offboard_edits_the_file_and_apply_removes_acls_and_scram_credentials(fake):
    fake.run("apply", "--yes")
    fake.set_state(
        acls=fake.acls(), scram={"admin": ["SCRAM-SHA-512"], "dana": ["SCRAM-SHA-512", "SCRAM-SHA-256"]}
    )
    edited = fake.run("--output", "json", "offboard", "User:dana", "--note", "left")
    assert edited.exit_code == 0, edited.output
    report = json_of(edited)
    assert report["changed"] is True
    assert [c["mechanism"] for c in report["plan"]["credentials_deleted"]] == [
        "SCRAM-SHA-256",
        "SCRAM-SHA-512",
    ]
    assert "  - User:dana  # left\n" in fake.file.read_text()
    assert fake.run("apply", "--yes").exit_code == 0
    assert "dana" not in fake.scram()
    assert not [acl for acl in fake.acls() if acl[3] == "User:dana"]
    assert fake.run("plan", "--detailed-exitcode").exit_code == 0


def test_move_member_edits_the_file_and_shows_the_plan(fake):
    fake.run("apply", "--yes")
    result = fake.run(
        "--output", "json", "move-member", "alice", "--from", "analytics", "--to", "data-engineering"
    )
    assert result.exit_code == 0, result.output
    plan = json_of(result)["plan"]
    assert {(a["operation"], a["name"]) for a in plan["added"]} == {("READ", "user_profiles_dlq")}
    assert {(a["permission"], a["operation"], a["name"]) for a in plan["removed"]} == {
        ("ALLOW", "READ", "analytics."),
        ("ALLOW", "DESCRIBE", "analytics."),
        ("DENY", "READ", "user_profiles"),
    }
    assert "      - User:dana\n      - User:alice\n" in fake.file.read_text()


def test_shortcut_without_a_cluster_only_edits(fake):
    result = CliRunner().invoke(
        cli,
        [
            "--file",
            str(fake.file),
            "move-member",
            "User:alice",
            "--from",
            "analytics",
            "--to",
            "data-engineering",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Plan not shown" in result.stdout
    assert fake.calls() == []


def test_grant_and_revoke_change_the_team_rights(fake):
    granted = fake.run(
        "--output",
        "json",
        "grant",
        "analytics",
        "--type",
        "group",
        "--name",
        "analytics.",
        "--pattern",
        "prefixed",
        "-o",
        "Read",
    )
    assert granted.exit_code == 0, granted.output
    assert "{type: group, name: analytics., pattern: prefixed, operations: [Read]}" in fake.file.read_text()
    revoked = fake.run(
        "revoke", "analytics", "--type", "topic", "--name", "user_profiles", "--deny", "--no-plan"
    )
    assert revoked.exit_code == 0, revoked.output
    assert "permission: deny" not in fake.file.read_text()


def test_unknown_team_is_a_clear_error(fake):
    result = fake.run("move-member", "User:alice", "--from", "analytics", "--to", "sales")
    assert result.exit_code == 1
    assert "no team 'sales'" in result.stderr
    assert fake.file.read_text() == DESCRIPTION


def test_credentials_from_the_environment_never_reach_argv(fake):
    env = {"BDF_ACL_SASL_USERNAME": "admin", "BDF_ACL_SASL_PASSWORD": ADMIN_PASSWORD}
    result = fake.run("plan", config=False, env=env)
    assert result.exit_code == 0, result.output
    (call,) = fake.calls()
    assert call["config_user"] == "admin"
    assert call["config_mode"] == "0o600"
    assert not any(ADMIN_PASSWORD in arg for arg in call["argv"])
    temporary = Path(call["argv"][call["argv"].index("--command-config") + 1])
    assert not temporary.exists()


def test_config_file_credentials_never_reach_argv(fake):
    fake.run("apply", "--yes")
    assert fake.calls()
    assert not any(ADMIN_PASSWORD in arg for call in fake.calls() for arg in call["argv"])


def test_missing_admin_config_says_how_to_give_credentials(fake, tmp_path):
    result = fake.run("--command-config", str(tmp_path / "absent.properties"), "plan")
    assert result.exit_code == 1
    assert "admin client config" in result.stderr
    assert "BDF_ACL_SASL_USERNAME" in result.stderr


def test_audit_log_records_who_ran_it_when_and_what_changed(fake):
    fake.run("apply", "--yes", env={"BDF_ACL_ACTOR": "ops-jane"})
    entries = [json.loads(line) for line in fake.audit.read_text().splitlines()]
    assert {entry["actor"] for entry in entries} == {"ops-jane"}
    assert all(
        entry["ts"].endswith("Z") and entry["bootstrap_server"] == "127.0.0.1:9092" for entry in entries
    )
    added = [acl for entry in entries if entry["action"] == "add_acls" for acl in entry["acls"]]
    assert len(added) == 6
    assert entries[-1]["action"] == "apply_done"
    assert oct(fake.audit.stat().st_mode & 0o777) == "0o640"
    # Nothing to do: nothing logged.
    fake.run("apply", "--yes")
    assert len(fake.audit.read_text().splitlines()) == len(entries)


def test_failure_midway_reports_what_was_applied(fake):
    fake.set_state(acls=[["TOPIC", "old", "LITERAL", "User:alice", "*", "READ", "ALLOW"]], scram={})
    result = fake.run("--output", "json", "apply", "--yes", env={"FAKE_KAFKA_FAIL_ON": "--add"})
    assert result.exit_code == 1
    report = json_of(result)
    assert report["changed"] is True
    assert [a["name"] for a in report["removed"]] == ["old"]
    assert report["added"] == []
    assert "TimeoutException: simulated" in report["error"]
    actions = [json.loads(line)["action"] for line in fake.audit.read_text().splitlines()]
    assert actions == ["remove_acls", "apply_failed"]


def test_apply_refuses_a_plan_other_than_the_one_shown(fake):
    shown = json_of(fake.run("--output", "json", "plan"))["fingerprint"]
    fake.set_state(acls=[["TOPIC", "x", "LITERAL", "User:alice", "*", "READ", "ALLOW"]], scram={})
    result = fake.run("apply", "--yes", "--fingerprint", shown)
    assert result.exit_code == 1
    assert "the plan changed since it was shown" in result.stderr
    assert fake.acls() == [["TOPIC", "x", "LITERAL", "User:alice", "*", "READ", "ALLOW"]]


def test_apply_with_the_shown_fingerprint_applies(fake):
    shown = json_of(fake.run("--output", "json", "plan"))["fingerprint"]
    assert fake.run("apply", "--yes", "--fingerprint", shown).exit_code == 0


def test_wrong_cluster_id_stops_before_listing(fake):
    result = fake.run("--expect-cluster-id", "prod-cluster", "apply", "--yes")
    assert result.exit_code == 1
    assert "belongs to cluster fake-cluster-id, not prod-cluster" in result.stderr
    assert [call["tool"] for call in fake.calls()] == ["kafka-cluster.sh"]


def test_usage_errors_exit_64_so_that_2_always_means_changes(fake):
    result = fake.run("plan", "--no-such-option")
    assert result.exit_code == EXIT_USAGE


def test_missing_kafka_tools_are_named(fake, tmp_path):
    result = fake.run("--kafka-bin", str(tmp_path / "nowhere"), "plan")
    assert result.exit_code == 1
    assert "kafka-acls.sh not found: set --kafka-bin" in result.stderr


def test_list_desired_needs_no_cluster(fake):
    result = CliRunner().invoke(
        cli, ["--file", str(fake.file), "--output", "json", "list", "--desired", "--team", "analytics"]
    )
    assert result.exit_code == 0, result.output
    (alice,) = json_of(result)["principals"]
    assert alice["principal"] == "User:alice"
    assert alice["owner"] == "team analytics"
    assert len(alice["acls"]) == 3


def test_list_shows_live_rights_per_principal(fake):
    fake.run("apply", "--yes")
    result = fake.run("list", "--principal", "User:producer")
    assert result.stdout.splitlines() == [
        "User:producer (application producer)",
        "  ALLOW DESCRIBE on topic user_profiles (literal) from *",
        "  ALLOW WRITE on topic user_profiles (literal) from *",
    ]


def test_options_come_from_the_environment(fake):
    env = {"BDF_ACL_FILE": str(fake.file), "BDF_ACL_OUTPUT": "json"}
    result = CliRunner().invoke(cli, ["validate"], env=env)
    assert result.exit_code == 0, result.output
    assert json_of(result)["valid"] is True


def test_validate_reports_every_problem(fake):
    fake.file.write_text(
        DESCRIPTION.replace("User:dana", "User:alice").replace(
            "type: topic, name: user_profiles_dlq", "type: topik, name: user_profiles_dlq"
        )
    )
    result = CliRunner().invoke(cli, ["--file", str(fake.file), "validate"])
    assert result.exit_code == 1
    assert f"{fake.file}:17: duplicate principal User:alice" in result.stderr
    assert f"{fake.file}:19: unknown resource type 'topik'" in result.stderr


def test_unwritable_audit_log_stops_apply_before_any_change(fake, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result = fake.run("--audit-log", str(not_a_directory / "audit.jsonl"), "apply", "--yes")
    assert result.exit_code == 1
    assert "cannot write the audit log" in result.stderr
    assert fake.acls() == []


def test_output_json_after_the_subcommand_as_the_kafka_role_passes_it(fake):
    result = fake.run("apply", "--yes", "--output", "json")
    assert result.exit_code == 0, result.output
    report = json_of(result)
    assert report["changed"] is True
    assert report["lines"][-1].startswith("Plan: 6 to add")


def test_shortcut_whose_plan_fails_still_reports_the_edit(fake, tmp_path):
    result = fake.run(
        "--kafka-bin",
        str(tmp_path / "nowhere"),
        "--output",
        "json",
        "offboard",
        "User:dana",
    )
    assert result.exit_code == 1
    report = json_of(result)
    assert report["changed"] is True
    assert "offboarded User:dana (team data-engineering), but the plan failed" in report["error"]
    assert "offboarded:\n  - User:dana" in fake.file.read_text()
