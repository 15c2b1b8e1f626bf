"""The access description: who may do what on which Kafka resources.

The description is a YAML file (``acl/access.yml``) with three kinds of principals:

- ``applications``: one principal each (the producer, the stream job, ...);
- ``teams``: org units with ``members``; every member gets the team's grants;
- ``offboarded``: principals that must have no ACLs and no SCRAM credentials left.

Each principal appears once in the whole file: a member belongs to one team. The
principals named in the file are the *managed* ones; ACLs of any other principal (the
super users, say) are never touched.

It is checked as a whole when it is loaded: every problem is reported with the file,
the line and the reason (:class:`DescriptionError`), before anything touches the cluster.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SUPPORTED_VERSION = 1

# Kafka's AclOperation names (as kafka-acls.sh --list prints them).
OPERATIONS = (
    "ALL",
    "READ",
    "WRITE",
    "CREATE",
    "DELETE",
    "ALTER",
    "DESCRIBE",
    "CLUSTER_ACTION",
    "DESCRIBE_CONFIGS",
    "ALTER_CONFIGS",
    "IDEMPOTENT_WRITE",
    "CREATE_TOKENS",
    "DESCRIBE_TOKENS",
    "TWO_PHASE_COMMIT",
)

# Resource types a description may grant on, by their YAML name, and the operations
# Kafka 4.x accepts on each (what kafka-acls.sh answers "only supports operations ...").
RESOURCE_TYPES = {
    "topic": "TOPIC",
    "group": "GROUP",
    "transactional_id": "TRANSACTIONAL_ID",
    "cluster": "CLUSTER",
}
RESOURCE_OPERATIONS = {
    "TOPIC": {
        "ALL",
        "READ",
        "WRITE",
        "CREATE",
        "DELETE",
        "ALTER",
        "DESCRIBE",
        "DESCRIBE_CONFIGS",
        "ALTER_CONFIGS",
    },
    "GROUP": {"ALL", "READ", "DESCRIBE", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"},
    "CLUSTER": {
        "ALL",
        "CREATE",
        "ALTER",
        "DESCRIBE",
        "CLUSTER_ACTION",
        "DESCRIBE_CONFIGS",
        "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE",
    },
    "TRANSACTIONAL_ID": {"ALL", "WRITE", "DESCRIBE", "TWO_PHASE_COMMIT"},
}
CLUSTER_RESOURCE_NAME = "kafka-cluster"
PATTERN_TYPES = {"literal": "LITERAL", "prefixed": "PREFIXED"}
PERMISSIONS = {"allow": "ALLOW", "deny": "DENY"}

PRINCIPAL_RE = re.compile(r"^User:[A-Za-z0-9][A-Za-z0-9._@-]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # team and application names
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

TOP_LEVEL_KEYS = ("version", "applications", "teams", "offboarded")
APPLICATION_KEYS = ("principal", "description", "grants")
TEAM_KEYS = ("description", "members", "grants")
GRANT_KEYS = ("type", "name", "pattern", "operations", "permission", "host")


def operation_key(text: str) -> str:
    """'IdempotentWrite', 'idempotent_write', 'IDEMPOTENT-WRITE' -> 'idempotentwrite'."""
    return re.sub(r"[_\-\s]", "", text).lower()


_OPERATIONS_BY_KEY = {operation_key(op): op for op in OPERATIONS}


def normalize_operation(text: str) -> str | None:
    """The Kafka name of an operation written as in the docs (Read, DescribeConfigs), or None."""
    return _OPERATIONS_BY_KEY.get(operation_key(text))


def operation_arg(operation: str) -> str:
    """'DESCRIBE_CONFIGS' -> 'DescribeConfigs', the spelling kafka-acls.sh --operation takes."""
    return "".join(part.capitalize() for part in operation.split("_"))


def principal_user(principal: str) -> str:
    """'User:alice' -> 'alice' (the SCRAM user name)."""
    return principal.split(":", 1)[1]


@dataclass(frozen=True, order=True)
class Acl:
    """One Kafka ACL binding, in the terms kafka-acls.sh --list prints it."""

    principal: str
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER, ...
    name: str
    pattern: str  # LITERAL or PREFIXED
    operation: str  # READ, WRITE, ...
    permission: str  # ALLOW or DENY
    host: str = "*"

    def to_dict(self) -> dict[str, str]:
        return {
            "principal": self.principal,
            "permission": self.permission,
            "operation": self.operation,
            "resource_type": self.resource_type,
            "name": self.name,
            "pattern": self.pattern,
            "host": self.host,
        }

    def describe(self) -> str:
        """'ALLOW READ on topic user_profiles (literal) from *'."""
        resource = self.resource_type.lower()
        return (
            f"{self.permission} {self.operation} on {resource} {self.name}"
            f" ({self.pattern.lower()}) from {self.host}"
        )


@dataclass(frozen=True)
class Grant:
    """What a team or an application may (ALLOW) or may not (DENY) do on one resource pattern."""

    resource_type: str
    name: str
    operations: tuple[str, ...]
    pattern: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"
    line: int = field(default=0, compare=False)

    @property
    def resource_key(self) -> tuple[str, str, str, str, str]:
        """Grants with the same key are one grant (their operations belong together)."""
        return (self.resource_type, self.name, self.pattern, self.permission, self.host)

    def allows_reading(self, topic: str) -> bool:
        """Whether this grant's pattern and operations cover reading ``topic`` (ALLOW or DENY)."""
        if self.resource_type != "TOPIC" or not {"READ", "ALL"} & set(self.operations):
            return False
        if self.pattern == "PREFIXED":
            return topic.startswith(self.name)
        return self.name in (topic, "*")

    def acls(self, principal: str) -> Iterator[Acl]:
        for operation in self.operations:
            yield Acl(
                principal, self.resource_type, self.name, self.pattern, operation, self.permission, self.host
            )

    def to_yaml(self) -> dict[str, object]:
        """The grant as it is written in the description (defaults left out)."""
        entry: dict[str, object] = {"type": _yaml_name(RESOURCE_TYPES, self.resource_type)}
        if self.resource_type != "CLUSTER":
            entry["name"] = self.name
        if self.pattern != "LITERAL":
            entry["pattern"] = _yaml_name(PATTERN_TYPES, self.pattern)
        entry["operations"] = [operation_arg(op) for op in self.operations]
        if self.permission != "ALLOW":
            entry["permission"] = _yaml_name(PERMISSIONS, self.permission)
        if self.host != "*":
            entry["host"] = self.host
        return entry


@dataclass(frozen=True)
class Application:
    name: str
    principal: str
    description: str = ""
    grants: tuple[Grant, ...] = ()

    def to_yaml(self) -> dict[str, object]:
        entry: dict[str, object] = {"principal": self.principal}
        if self.description:
            entry["description"] = self.description
        entry["grants"] = [grant.to_yaml() for grant in self.grants]
        return entry


@dataclass(frozen=True)
class Team:
    name: str
    description: str = ""
    members: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()

    def to_yaml(self) -> dict[str, object]:
        entry: dict[str, object] = {}
        if self.description:
            entry["description"] = self.description
        entry["members"] = list(self.members)
        entry["grants"] = [grant.to_yaml() for grant in self.grants]
        return entry


@dataclass(frozen=True)
class Description:
    """A validated access description."""

    path: Path
    applications: dict[str, Application]
    teams: dict[str, Team]
    offboarded: tuple[str, ...] = ()

    def owners(self) -> dict[str, str]:
        """principal -> who holds it: 'application producer', 'team analytics', 'offboarded'."""
        owner = {app.principal: f"application {app.name}" for app in self.applications.values()}
        for team in self.teams.values():
            owner.update((member, f"team {team.name}") for member in team.members)
        owner.update((principal, "offboarded") for principal in self.offboarded)
        return owner

    def managed_principals(self) -> set[str]:
        return set(self.owners())

    def team_of(self, principal: str) -> Team | None:
        return next((team for team in self.teams.values() if principal in team.members), None)

    def application_of(self, principal: str) -> Application | None:
        return next((app for app in self.applications.values() if app.principal == principal), None)

    def desired_acls(self) -> set[Acl]:
        acls: set[Acl] = set()
        for app in self.applications.values():
            for grant in app.grants:
                acls.update(grant.acls(app.principal))
        for team in self.teams.values():
            for member in team.members:
                for grant in team.grants:
                    acls.update(grant.acls(member))
        return acls

    def topic_readers(self, topic: str) -> set[str]:
        """Who may read ``topic`` ('application stream', 'team data-engineering'); super users aside."""
        holders = [(f"application {app.name}", app.grants) for app in self.applications.values()]
        holders += [(f"team {team.name}", team.grants) for team in self.teams.values()]
        return {
            owner
            for owner, grants in holders
            if any(grant.allows_reading(topic) for grant in grants if grant.permission == "ALLOW")
            and not any(grant.allows_reading(topic) for grant in grants if grant.permission == "DENY")
        }

    def to_yaml(self) -> dict[str, object]:
        return {
            "version": SUPPORTED_VERSION,
            "applications": {name: app.to_yaml() for name, app in self.applications.items()},
            "teams": {name: team.to_yaml() for name, team in self.teams.items()},
            "offboarded": list(self.offboarded),
        }


def _yaml_name(names: dict[str, str], kafka_name: str) -> str:
    return next(key for key, value in names.items() if value == kafka_name)


@dataclass(frozen=True)
class Problem:
    line: int
    reason: str


class DescriptionError(Exception):
    """The description is not valid; every problem names its line."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.path = Path(path)
        self.problems = sorted(problems, key=lambda problem: problem.line)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.path}:{problem.line}: {problem.reason}" for problem in self.problems)


def load_description(path: Path | str) -> Description:
    """Read and validate the description file (raises DescriptionError, never a traceback)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DescriptionError(path, [Problem(0, "file not found (set --file or BDF_ACL_FILE)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DescriptionError(path, [Problem(0, f"cannot read the file: {exc}")]) from None
    return parse_description(text, path)


def parse_description(text: str, path: Path | str = "<text>") -> Description:
    path = Path(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise DescriptionError(path, [Problem(line, f"not valid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise DescriptionError(path, [Problem(0, f"not valid YAML: {exc}")]) from None
    if root is None:
        raise DescriptionError(path, [Problem(1, "the file is empty")])
    checker = _Checker()
    description = checker.description(root, path)
    if checker.problems:
        raise DescriptionError(path, checker.problems)
    return description


def parse_grant(spec: dict[str, object]) -> Grant:
    """One grant given as a mapping (as the shortcuts build it), validated like in a file."""
    node = yaml.compose(yaml.safe_dump(spec, sort_keys=False), Loader=yaml.SafeLoader)
    checker = _Checker()
    grant = checker.grant(node, "the grant")
    if checker.problems or grant is None:
        raise DescriptionError("<grant>", checker.problems)
    return grant


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    """Walks the YAML node tree (which keeps line numbers) and collects every problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.principal_lines: dict[str, tuple[int, str]] = {}

    def problem(self, node: yaml.Node, reason: str) -> None:
        self.problems.append(Problem(_line(node), reason))

    # --- generic node checks ----------------------------------------------------------

    def mapping(self, node: yaml.Node, what: str, allowed: Iterable[str] | None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping (key: value)")
            return {}
        allowed = tuple(allowed) if allowed is not None else None
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or not key:
                self.problem(key_node, f"{what} has a key that is not a name")
            elif key in entries:
                self.problem(key_node, f"duplicate key '{key}' in {what}")
            elif allowed is not None and key not in allowed:
                self.problem(
                    key_node,
                    f"unknown key '{key}' in {what}{_suggest(key, allowed)};"
                    f" expected one of: {', '.join(allowed)}",
                )
            else:
                entries[key] = value_node
        return entries

    def sequence(self, node: yaml.Node | None, what: str) -> list[yaml.Node]:
        if node is None or _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, f"{what} must be a list")
            return []
        return list(node.value)

    def text(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or _is_null(node):
            self.problem(node, f"{what} must be a single value")
            return None
        value = node.value
        if value != value.strip() or not value:
            self.problem(node, f"{what} must not be empty or start or end with spaces")
            return None
        return value

    def principal(self, node: yaml.Node, owner: str) -> str | None:
        principal = self.text(node, f"principal of {owner}")
        if principal is None:
            return None
        if not PRINCIPAL_RE.match(principal):
            self.problem(
                node,
                f"'{principal}' is not a principal: write User:<name>"
                " (letters, digits, '.', '_', '@', '-'; no wildcard)",
            )
            return None
        if principal in self.principal_lines:
            first_line, first_owner = self.principal_lines[principal]
            self.problem(
                node,
                f"duplicate principal {principal}: {owner} here, already {first_owner} on line {first_line}"
                " (a principal belongs to one team or application)",
            )
            return None
        self.principal_lines[principal] = (_line(node), owner)
        return principal

    # --- the document ---------------------------------------------------------------

    def description(self, root: yaml.Node, path: Path) -> Description:
        top = self.mapping(root, "the description", TOP_LEVEL_KEYS)
        self.version(top.get("version"), root)
        applications = self.applications(top.get("applications"))
        teams = self.teams(top.get("teams"))
        offboarded = tuple(
            principal
            for node in self.sequence(top.get("offboarded"), "offboarded")
            if (principal := self.principal(node, "offboarded")) is not None
        )
        return Description(path, applications, teams, offboarded)

    def version(self, node: yaml.Node | None, root: yaml.Node) -> None:
        if node is None:
            self.problem(root, f"missing 'version: {SUPPORTED_VERSION}'")
        elif not isinstance(node, yaml.ScalarNode) or node.value != str(SUPPORTED_VERSION):
            self.problem(node, f"unsupported version; this tool reads version {SUPPORTED_VERSION}")

    def named_entries(
        self, node: yaml.Node | None, kind: str, allowed: Iterable[str]
    ) -> Iterator[tuple[str, yaml.Node, dict[str, yaml.Node]]]:
        """The ``<kind>s`` section's entries whose name is valid: name, node, fields."""
        if node is None or _is_null(node):
            return
        for name, value in self.mapping(node, f"{kind}s", None).items():
            if not NAME_RE.match(name):
                self.problem(value, f"{kind} name '{name}' may hold letters, digits, '.', '_', '-'")
                continue
            yield name, value, self.mapping(value, f"{kind} {name}", allowed)

    def applications(self, node: yaml.Node | None) -> dict[str, Application]:
        applications = {}
        for name, value, fields in self.named_entries(node, "application", APPLICATION_KEYS):
            if "principal" not in fields:
                self.problem(value, f"application {name} has no 'principal'")
            principal = (
                self.principal(fields["principal"], f"application {name}") if "principal" in fields else None
            )
            description = self.optional_text(fields.get("description"), f"description of {name}")
            grants = self.grants(fields.get("grants"), f"application {name}")
            if principal is not None:
                applications[name] = Application(name, principal, description, grants)
        return applications

    def teams(self, node: yaml.Node | None) -> dict[str, Team]:
        teams = {}
        for name, _value, fields in self.named_entries(node, "team", TEAM_KEYS):
            description = self.optional_text(fields.get("description"), f"description of team {name}")
            members = tuple(
                principal
                for member in self.sequence(fields.get("members"), f"members of team {name}")
                if (principal := self.principal(member, f"member of team {name}")) is not None
            )
            grants = self.grants(fields.get("grants"), f"team {name}")
            teams[name] = Team(name, description, members, grants)
        return teams

    def optional_text(self, node: yaml.Node | None, what: str) -> str:
        if node is None or _is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} must be text")
            return ""
        return node.value

    # --- grants ---------------------------------------------------------------------

    def grants(self, node: yaml.Node | None, owner: str) -> tuple[Grant, ...]:
        grants: list[Grant] = []
        seen: dict[tuple[str, ...], int] = {}
        for item in self.sequence(node, f"grants of {owner}"):
            grant = self.grant(item, owner)
            if grant is None:
                continue
            if grant.resource_key in seen:
                self.problem(
                    item,
                    f"{owner} already has a grant on this {grant.resource_type.lower()} {grant.name}"
                    f" ({grant.pattern.lower()}, {grant.permission.lower()}, host {grant.host}) on line"
                    f" {seen[grant.resource_key]}: list all its operations in one grant",
                )
                continue
            seen[grant.resource_key] = grant.line
            grants.append(grant)
        return tuple(grants)

    def grant(self, node: yaml.Node, owner: str) -> Grant | None:
        what = f"grant of {owner}"
        fields = self.mapping(node, what, GRANT_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return None
        problems_before = len(self.problems)
        resource_type = self.choice(fields, node, "type", "resource type", RESOURCE_TYPES)
        pattern = self.choice(fields, node, "pattern", "pattern type", PATTERN_TYPES, default="literal")
        permission = self.choice(fields, node, "permission", "permission", PERMISSIONS, default="allow")
        host = self.host(fields.get("host"))
        name = self.resource_name(fields.get("name"), node, resource_type, pattern)
        operations = self.operations(fields.get("operations"), node, resource_type)
        if len(self.problems) > problems_before or resource_type is None or name is None:
            return None
        return Grant(
            resource_type,
            name,
            operations,
            pattern or "LITERAL",
            permission or "ALLOW",
            host or "*",
            line=_line(node),
        )

    def choice(
        self,
        fields: dict[str, yaml.Node],
        parent: yaml.Node,
        key: str,
        what: str,
        choices: dict[str, str],
        default: str | None = None,
    ) -> str | None:
        node = fields.get(key)
        if node is None:
            if default is None:
                self.problem(parent, f"missing '{key}' ({what}: {', '.join(choices)})")
                return None
            return choices[default]
        value = self.text(node, what)
        if value is None:
            return None
        if value.lower() not in choices:
            self.problem(
                node,
                f"unknown {what} '{value}'{_suggest(value.lower(), choices)};"
                f" expected one of: {', '.join(choices)}",
            )
            return None
        return choices[value.lower()]

    def host(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return "*"
        value = self.text(node, "host")
        if value is None or value == "*":
            return value
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.problem(node, f"host '{value}' must be '*' or an IP address (Kafka matches client IPs)")
            return None

    def resource_name(
        self, node: yaml.Node | None, parent: yaml.Node, resource_type: str | None, pattern: str | None
    ) -> str | None:
        if resource_type == "CLUSTER":
            if node is not None and getattr(node, "value", None) != CLUSTER_RESOURCE_NAME:
                self.problem(node, f"the cluster resource has no name (or '{CLUSTER_RESOURCE_NAME}')")
                return None
            if pattern == "PREFIXED":
                self.problem(parent, "the cluster resource cannot be prefixed")
                return None
            return CLUSTER_RESOURCE_NAME
        if node is None:
            self.problem(parent, "missing 'name' (the topic, group or transactional id)")
            return None
        name = self.text(node, "resource name")
        if name is None:
            return None
        if name == "*" and pattern == "PREFIXED":
            self.problem(node, "'*' means every resource: it cannot be prefixed")
            return None
        if name == "*":
            return name
        if resource_type == "TOPIC" and not TOPIC_RE.match(name):
            self.problem(
                node, f"'{name}' is not a topic name (letters, digits, '.', '_', '-'; at most 249 characters)"
            )
            return None
        return name

    def operations(
        self, node: yaml.Node | None, parent: yaml.Node, resource_type: str | None
    ) -> tuple[str, ...]:
        if node is None:
            self.problem(parent, "missing 'operations' (e.g. [Read, Describe])")
            return ()
        operations: list[str] = []
        items = self.sequence(node, "operations")
        if isinstance(node, yaml.SequenceNode) and not items:
            self.problem(node, "operations must not be empty")
        for item in items:
            value = self.text(item, "operation")
            if value is None:
                continue
            operation = normalize_operation(value)
            if operation is None:
                names = [operation_arg(op) for op in OPERATIONS]
                hint = _suggest(value, names) or f"; expected one of: {', '.join(names)}"
                self.problem(item, f"unknown operation '{value}'{hint}")
            elif operation in operations:
                self.problem(item, f"operation {operation_arg(operation)} is listed twice")
            elif resource_type is not None and operation not in RESOURCE_OPERATIONS[resource_type]:
                allowed = sorted(operation_arg(op) for op in RESOURCE_OPERATIONS[resource_type])
                self.problem(
                    item,
                    f"operation {operation_arg(operation)} does not apply to a"
                    f" {_yaml_name(RESOURCE_TYPES, resource_type)}; it takes: {', '.join(allowed)}",
                )
            else:
                operations.append(operation)
        return tuple(operations)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
