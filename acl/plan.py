"""The difference between the description and the live cluster, and how to show it.

Only managed principals (those the description names) are compared: an ACL of any
other principal is reported as *unmanaged* and left alone. For offboarded principals
the plan also deletes their SCRAM credentials, so they can no longer authenticate.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from acl.model import Acl, Description, principal_user


@dataclass(frozen=True, order=True)
class Credential:
    """One SCRAM credential (a user has one per mechanism)."""

    principal: str
    mechanism: str

    def to_dict(self) -> dict[str, str]:
        return {"principal": self.principal, "mechanism": self.mechanism}


@dataclass(frozen=True)
class Plan:
    add: tuple[Acl, ...]
    remove: tuple[Acl, ...]
    delete_credentials: tuple[Credential, ...] = ()
    unmanaged: tuple[Acl, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.add or self.remove or self.delete_credentials)

    @property
    def fingerprint(self) -> str:
        """Identifies the changes: `apply --fingerprint` refuses to run a different plan."""
        changes = {
            "add": [acl.to_dict() for acl in self.add],
            "remove": [acl.to_dict() for acl in self.remove],
            "delete_credentials": [credential.to_dict() for credential in self.delete_credentials],
        }
        canonical = json.dumps(changes, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def principals(self) -> list[str]:
        touched = {acl.principal for acl in (*self.add, *self.remove)}
        touched.update(credential.principal for credential in self.delete_credentials)
        return sorted(touched)


def compute_plan(
    description: Description,
    live: Iterable[Acl],
    scram_users: Mapping[str, Iterable[str]] | None = None,
) -> Plan:
    """What to add and remove so that the managed principals have exactly the described ACLs.

    ``scram_users`` (user name -> mechanisms) is what the cluster holds; the credentials
    of offboarded principals found there are to be deleted.
    """
    live = set(live)
    desired = description.desired_acls()
    managed = description.managed_principals()
    managed_live = {acl for acl in live if acl.principal in managed}
    credentials = [
        Credential(principal, mechanism)
        for principal in description.offboarded
        for mechanism in (scram_users or {}).get(principal_user(principal), ())
    ]
    return Plan(
        add=tuple(sorted(desired - live)),
        remove=tuple(sorted(managed_live - desired)),
        delete_credentials=tuple(sorted(credentials)),
        unmanaged=tuple(sorted(live - managed_live)),
    )


def plan_to_dict(plan: Plan, applied: bool) -> dict[str, object]:
    """The JSON shape of `plan` and `apply` (the Ansible contract: `changed`)."""
    return {
        "changed": plan.changed,
        "applied": applied,
        "fingerprint": plan.fingerprint,
        "added": [acl.to_dict() for acl in plan.add],
        "removed": [acl.to_dict() for acl in plan.remove],
        "credentials_deleted": [credential.to_dict() for credential in plan.delete_credentials],
        "unmanaged": [acl.to_dict() for acl in plan.unmanaged],
        "summary": summary(plan),
    }


def summary(plan: Plan) -> dict[str, int]:
    return {
        "add": len(plan.add),
        "remove": len(plan.remove),
        "delete_credentials": len(plan.delete_credentials),
        "principals": len(plan.principals()),
        "unmanaged": len(plan.unmanaged),
    }


def render_plan(plan: Plan, description: Description) -> str:
    """Adds and removes per principal, in a form people read before saying yes."""
    owners = description.owners()
    adds = _by_principal(plan.add)
    removes = _by_principal(plan.remove)
    credentials: dict[str, list[Credential]] = defaultdict(list)
    for credential in plan.delete_credentials:
        credentials[credential.principal].append(credential)
    lines: list[str] = []
    for principal in plan.principals():
        lines.append(f"{principal} ({owners.get(principal, 'not in the description')})")
        lines.extend(f"  - {acl.describe()}" for acl in removes.get(principal, ()))
        lines.extend(f"  + {acl.describe()}" for acl in adds.get(principal, ()))
        lines.extend(
            f"  - SCRAM credential {credential.mechanism} (can no longer authenticate)"
            for credential in credentials.get(principal, ())
        )
    if plan.changed:
        lines.append(
            f"Plan: {len(plan.add)} to add, {len(plan.remove)} to remove,"
            f" {len(plan.delete_credentials)} SCRAM credential(s) to delete."
        )
    else:
        lines.append("No changes: the cluster matches the description.")
    if plan.unmanaged:
        counts = {principal: len(acls) for principal, acls in _by_principal(plan.unmanaged).items()}
        listed = ", ".join(f"{principal} ({count})" for principal, count in sorted(counts.items()))
        lines.append(f"Left alone (principals not in the description): {listed}")
    return "\n".join(lines)


def _by_principal(acls: Iterable[Acl]) -> dict[str, list[Acl]]:
    grouped: dict[str, list[Acl]] = defaultdict(list)
    for acl in acls:
        grouped[acl.principal].append(acl)
    return grouped
