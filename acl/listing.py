"""Parse what the Kafka tools print: ``kafka-acls.sh --list`` and SCRAM users.

``kafka-acls.sh --list`` (org.apache.kafka.tools.AclCommand, Kafka 4.x) prints::

    Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=user_profiles, patternType=LITERAL)`:
    \t(principal=User:producer, host=*, operation=WRITE, permissionType=ALLOW)
    \t(principal=User:producer, host=*, operation=DESCRIBE, permissionType=ALLOW)

with a blank line between resources (``--principal`` adds an ``ACLs for principal``
header). A line that fits none of these stops the parse: a misread listing must not
become a plan.
"""

from __future__ import annotations

import re

from acl.model import Acl

_RESOURCE_RE = re.compile(
    r"^(?:Current ACLs|Adding ACLs) for resource `ResourcePattern\("
    r"resourceType=(?P<type>[A-Z_]+), name=(?P<name>.*), patternType=(?P<pattern>[A-Z_]+)\)`:\s*$"
)
# The principal may hold ", " itself: the greedy group and the anchored tail sort it out.
_ENTRY_RE = re.compile(
    r"^\s*\(principal=(?P<principal>.*), host=(?P<host>[^,\s]*), "
    r"operation=(?P<operation>[A-Z_]+), permissionType=(?P<permission>ALLOW|DENY)\)\s*$"
)
_PRINCIPAL_HEADER_RE = re.compile(r"^ACLs for principal `.*`\s*$")
_SCRAM_RE = re.compile(r"^SCRAM credential configs for user-principal '(?P<user>.*)' are (?P<configs>.*)$")


class ListingError(Exception):
    """The tool printed something this parser does not understand."""


def parse_acl_listing(text: str) -> set[Acl]:
    """Every ACL binding in the output of ``kafka-acls.sh --list``."""
    acls: set[Acl] = set()
    resource: tuple[str, str, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or _PRINCIPAL_HEADER_RE.match(line):
            continue
        if match := _RESOURCE_RE.match(line):
            resource = (match["type"], match["name"], match["pattern"])
            continue
        match = _ENTRY_RE.match(line)
        if match is None:
            raise ListingError(
                f"kafka-acls.sh --list, line {number}: unexpected output: {line.strip()[:200]!r}"
            )
        if resource is None:
            raise ListingError(f"kafka-acls.sh --list, line {number}: an ACL entry before any resource")
        resource_type, name, pattern = resource
        acls.add(
            Acl(
                principal=match["principal"],
                resource_type=resource_type,
                name=name,
                pattern=pattern,
                operation=match["operation"],
                permission=match["permission"],
                host=match["host"],
            )
        )
    return acls


def parse_scram_users(text: str) -> dict[str, tuple[str, ...]]:
    """user name -> its SCRAM mechanisms, from ``kafka-configs.sh --describe --entity-type users``.

    Lines look like: ``SCRAM credential configs for user-principal 'alice' are
    SCRAM-SHA-512=iterations=8192, SCRAM-SHA-256=iterations=8192``.
    """
    users: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _SCRAM_RE.match(line.strip())
        if match is None:
            # Other entity configs (quotas: "Quota configs for user-principal ...") are not ours.
            if "configs for user-principal" in line:
                continue
            raise ListingError(f"kafka-configs.sh --describe, line {number}: unexpected output: {line[:200]}")
        mechanisms = tuple(
            part.split("=", 1)[0].strip() for part in match["configs"].split(", ") if part.strip()
        )
        users[match["user"]] = mechanisms
    return users
