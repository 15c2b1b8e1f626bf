"""An organisation change on the deployed lab: `playbooks/acl_update.yml` against the real Kafka.

User:alice moves from analytics to data-engineering (`bdf-acl move-member` edits a copy
of acl/access.yml). The playbook in --check mode plans without changing anything; the
first real run changes the ACLs, a second run changes nothing; alice's ACLs are the new
team's; the producer and the stream job, which the change does not concern, keep
working. The lab's own description is re-applied at the end.

Runs with LAB=1 against `make deploy INVENTORY=inventory/lab` (another lab with LAB_INVENTORY).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab import (
    INVENTORY_DIR,
    KAFKA_HOSTS,
    LAB_ONLY,
    PRODUCER_HOST,
    REPO,
    STREAM_HOST,
    eventually,
    kafka_conf,
    service_active,
    ssh,
)

pytestmark = LAB_ONLY

BIN = Path(sys.executable).parent
ACCESS = REPO / "acl" / "access.yml"
MOVED = "User:alice"


def acl_update(source: Path, *options: str) -> int:
    """Run the playbook with ``source`` as the description; the play recap's changed count."""
    result = subprocess.run(  # noqa: S603 - fixed command
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(INVENTORY_DIR),
            str(REPO / "playbooks" / "acl_update.yml"),
            "-e",
            f"acl_update_source={source}",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The play runs on the first Kafka host.
    recap = re.search(rf"^{re.escape(KAFKA_HOSTS[0])}\s*:\s*ok=\d+\s+changed=(\d+)", result.stdout, re.M)
    assert recap, result.stdout[-2000:]
    return int(recap.group(1))


def acls_of(principal: str) -> set[tuple[str, str, str, str, str]]:
    """(resource type, name, pattern, operation, permission) of every ACL of ``principal``."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    any_resource = (ResourceType.ANY, None, ResourcePatternType.ANY)
    query = AclBindingFilter(*any_resource, principal, None, AclOperation.ANY, AclPermissionType.ANY)
    admin = AdminClient(kafka_conf("admin"))  # kept referenced: a collected client cancels its futures
    bindings = admin.describe_acls(query).result(30)
    return {
        (b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name, b.permission_type.name)
        for b in bindings
    }


def stored_rows(cassandra) -> int:
    return cassandra.execute("SELECT count(*) FROM profiles").one()["count"]


@pytest.fixture(scope="module")
def moved_description(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("acl") / "access.yml"
    shutil.copy(ACCESS, target)
    command = ["--file", str(target), "move-member", MOVED, "--from", "analytics", "--to", "data-engineering"]
    result = subprocess.run(  # noqa: S603 - fixed command
        [str(BIN / "bdf-acl"), *command, "--no-plan"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.fixture(scope="module")
def update(moved_description, cassandra) -> Any:
    acl_update(ACCESS)  # start from the lab's description, whatever an earlier run left
    before = {"acls": acls_of(MOVED), "rows": stored_rows(cassandra), "epoch": int(time.time())}
    changed_in_check_mode = acl_update(moved_description, "--check")
    acls_after_check = acls_of(MOVED)
    first, second = acl_update(moved_description), acl_update(moved_description)
    yield {
        **before,
        "check": changed_in_check_mode,
        "acls_after_check": acls_after_check,
        "first": first,
        "second": second,
        "acls_after": acls_of(MOVED),
    }
    acl_update(ACCESS)


def test_check_mode_shows_a_change_and_applies_nothing(update):
    assert update["check"] > 0
    assert update["acls_after_check"] == update["acls"]


def test_first_run_changes_the_acls_and_a_second_run_changes_nothing(update):
    assert update["first"] > 0
    assert update["acls_after"] != update["acls"]
    assert update["second"] == 0


def test_the_moved_member_has_the_new_teams_rights_and_loses_the_old_ones(update):
    acls = update["acls_after"]
    assert ("TOPIC", "user_profiles_dlq", "LITERAL", "READ", "ALLOW") in acls
    assert ("GROUP", "dlq-inspect", "PREFIXED", "READ", "ALLOW") in acls
    assert not any(name.startswith("analytics.") for _, name, *_ in acls), acls
    assert ("TOPIC", "user_profiles", "LITERAL", "READ", "DENY") not in acls
    assert ("TOPIC", "analytics.", "PREFIXED", "READ", "ALLOW") in update["acls"]


def test_producer_and_stream_job_keep_working_across_the_update(update, cassandra):
    eventually(lambda: stored_rows(cassandra) >= update["rows"] + 100, 300, "rows stored after the update")
    for host, unit in ((PRODUCER_HOST, "bdf-producer"), (STREAM_HOST, "user-profiles-stream")):
        assert service_active(host, unit), f"{unit} stopped"
        journal = ssh(host, f"journalctl -u {unit} --since @{update['epoch']} -o cat --no-pager").stdout
        refusals = re.findall(r"AUTHORIZATION_FAILED|AuthorizationException|not authorized", journal, re.I)
        assert not refusals, f"{unit}: {refusals[:3]}"


def test_reapplying_the_lab_description_restores_the_rights(update):
    assert acl_update(ACCESS) > 0
    assert acls_of(MOVED) == update["acls"]
    assert acl_update(ACCESS) == 0
