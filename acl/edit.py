"""Organisation changes as edits of the description file.

Each shortcut changes the validated model, then makes the smallest edit of the text
that gives that model (a line removed from one member list, a line added to another),
so comments and layout survive. The edited text is parsed again and compared with the
intended model; should the two differ, the file is written in its normalised form
instead (comments at the top kept). The file is replaced atomically.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from acl.model import (
    PRINCIPAL_RE,
    Application,
    Description,
    DescriptionError,
    Grant,
    Team,
    operation_arg,
    parse_description,
    parse_grant,
)


class EditError(Exception):
    """The change cannot be made (unknown team, principal not a member, ...)."""


@dataclass(frozen=True)
class Edit:
    text: str
    description: Description
    message: str
    changed: bool = True


# --- the shortcuts ------------------------------------------------------------------


def move_member(text: str, path: Path, principal: str, source: str, target: str) -> Edit:
    current = parse_description(text, path)
    _check_principal(principal)
    source_team, target_team = _team(current, source), _team(current, target)
    if source == target:
        raise EditError(f"{principal} is already in team {target}")
    if principal not in source_team.members:
        holder = current.owners().get(principal, "not in the description")
        raise EditError(f"{principal} is not a member of team {source} ({holder})")
    expected = _replace_team(current, _without_member(source_team, principal))
    expected = _replace_team(expected, _with_member(target_team, principal))
    document = _Document(text)
    document.remove_from_list(["teams", source, "members"], principal)
    document.append_to_list(["teams", target, "members"], principal)
    return _finish(
        text, document.text, path, expected, f"moved {principal} from team {source} to team {target}"
    )


def add_member(text: str, path: Path, principal: str, team: str) -> Edit:
    current = parse_description(text, path)
    _check_principal(principal)
    target_team = _team(current, team)
    holder = current.owners().get(principal)
    if holder is not None and holder != "offboarded":
        raise EditError(f"{principal} is already in the description ({holder}); use move-member")
    expected = _replace_team(current, _with_member(target_team, principal))
    document = _Document(text)
    message = f"added {principal} to team {team}"
    if holder == "offboarded":
        expected = dataclasses.replace(
            expected, offboarded=tuple(p for p in current.offboarded if p != principal)
        )
        document.remove_from_list(["offboarded"], principal)
        message += " (no longer offboarded)"
    document.append_to_list(["teams", team, "members"], principal)
    return _finish(text, document.text, path, expected, message)


def offboard(text: str, path: Path, principal: str, note: str = "") -> Edit:
    """Move the principal to `offboarded`: the plan then removes its ACLs and SCRAM credentials."""
    current = parse_description(text, path)
    _check_principal(principal)
    if principal in current.offboarded:
        return Edit(text, current, f"{principal} is already offboarded", changed=False)
    document = _Document(text)
    expected = current
    team = current.team_of(principal)
    application = current.application_of(principal)
    if team is not None:
        expected = _replace_team(expected, _without_member(team, principal))
        document.remove_from_list(["teams", team.name, "members"], principal)
        was = f"team {team.name}"
    elif application is not None:
        applications = {k: v for k, v in expected.applications.items() if k != application.name}
        expected = dataclasses.replace(expected, applications=applications)
        document.remove_key(["applications"], application.name)
        was = f"application {application.name}"
    else:
        was = "not in the description before"
    expected = dataclasses.replace(expected, offboarded=(*expected.offboarded, principal))
    document.append_to_list(["offboarded"], principal, comment=note)
    return _finish(text, document.text, path, expected, f"offboarded {principal} ({was})")


def grant(text: str, path: Path, team_name: str, spec: dict[str, object]) -> Edit:
    """Give the team the operations of `spec` (merged into its grant on the same resource)."""
    current = parse_description(text, path)
    team = _team(current, team_name)
    new = _grant_from_spec(spec)
    index, existing = _find_grant(team, new)
    if existing is None:
        grants = (*team.grants, new)
        document = _Document(text)
        document.append_to_list(["teams", team_name, "grants"], _flow(new.to_yaml()))
        message = f"granted {_grant_text(new)} to team {team_name}"
    else:
        missing = tuple(op for op in new.operations if op not in existing.operations)
        if not missing:
            return Edit(text, current, f"team {team_name} already has {_grant_text(new)}", changed=False)
        merged = dataclasses.replace(existing, operations=(*existing.operations, *missing))
        grants = _replaced(team.grants, index, merged)
        document = _Document(text)
        document.replace_in_list(["teams", team_name, "grants"], index, _flow(merged.to_yaml()))
        message = f"granted {_grant_text(dataclasses.replace(new, operations=missing))} to team {team_name}"
    expected = _replace_team(current, dataclasses.replace(team, grants=grants))
    return _finish(text, document.text, path, expected, message)


def revoke(text: str, path: Path, team_name: str, spec: dict[str, object]) -> Edit:
    """Take operations (all of them when `spec` lists none) of a grant away from the team."""
    current = parse_description(text, path)
    team = _team(current, team_name)
    operations_given = bool(spec.get("operations"))
    wanted = _grant_from_spec(spec if operations_given else {**spec, "operations": ["All"]})
    index, existing = _find_grant(team, wanted)
    if existing is None:
        raise EditError(f"team {team_name} has no grant on {_resource_text(wanted)}")
    remaining = (
        tuple(op for op in existing.operations if op not in wanted.operations) if operations_given else ()
    )
    if operations_given and remaining == existing.operations:
        return Edit(text, current, f"team {team_name} does not have {_grant_text(wanted)}", changed=False)
    document = _Document(text)
    if remaining:
        kept = dataclasses.replace(existing, operations=remaining)
        grants = _replaced(team.grants, index, kept)
        document.replace_in_list(["teams", team_name, "grants"], index, _flow(kept.to_yaml()))
    else:
        grants = tuple(g for i, g in enumerate(team.grants) if i != index)
        document.remove_index(["teams", team_name, "grants"], index)
    taken = tuple(op for op in existing.operations if op not in remaining)
    expected = _replace_team(current, dataclasses.replace(team, grants=grants))
    message = f"revoked {_grant_text(dataclasses.replace(existing, operations=taken))} from team {team_name}"
    return _finish(text, document.text, path, expected, message)


def write_atomically(path: Path, text: str) -> None:
    """Replace the file in one step, keeping its permissions."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o640
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- model helpers -------------------------------------------------------------------


def _check_principal(principal: str) -> None:
    if not PRINCIPAL_RE.match(principal):
        raise EditError(f"'{principal}' is not a principal: write User:<name>")


def _team(description: Description, name: str) -> Team:
    if name not in description.teams:
        known = ", ".join(sorted(description.teams)) or "none"
        raise EditError(f"no team '{name}' in {description.path} (teams: {known})")
    return description.teams[name]


def _replace_team(description: Description, team: Team) -> Description:
    return dataclasses.replace(description, teams={**description.teams, team.name: team})


def _without_member(team: Team, principal: str) -> Team:
    return dataclasses.replace(team, members=tuple(m for m in team.members if m != principal))


def _with_member(team: Team, principal: str) -> Team:
    return dataclasses.replace(team, members=(*team.members, principal))


def _grant_from_spec(spec: dict[str, object]) -> Grant:
    try:
        return parse_grant({key: value for key, value in spec.items() if value is not None})
    except DescriptionError as exc:
        raise EditError("; ".join(problem.reason for problem in exc.problems)) from None


def _find_grant(team: Team, wanted: Grant) -> tuple[int, Grant | None]:
    for index, existing in enumerate(team.grants):
        if existing.resource_key == wanted.resource_key:
            return index, existing
    return -1, None


def _replaced(grants: tuple[Grant, ...], index: int, new: Grant) -> tuple[Grant, ...]:
    return tuple(new if i == index else g for i, g in enumerate(grants))


def _resource_text(grant: Grant) -> str:
    text = f"{grant.resource_type.lower()} {grant.name} ({grant.pattern.lower()})"
    if grant.permission != "ALLOW":
        text += f" {grant.permission}"
    return text + (f" from {grant.host}" if grant.host != "*" else "")


def _grant_text(grant: Grant) -> str:
    operations = ", ".join(operation_arg(op) for op in grant.operations)
    return f"{operations} on {_resource_text(grant)}"


def _finish(original: str, edited: str | None, path: Path, expected: Description, message: str) -> Edit:
    """Keep the minimal edit if it parses to the intended model, else write the normal form."""
    if edited is not None:
        try:
            if parse_description(edited, path).to_yaml() == expected.to_yaml():
                return Edit(edited, expected, message)
        except DescriptionError:
            pass
    normal = render_description(expected, header=_leading_comments(original))
    return Edit(normal, parse_description(normal, path), message + " (file rewritten in normal form)")


# --- the text -------------------------------------------------------------------------


class _Fallback(Exception):
    """The text has a shape the minimal edit does not handle: write the normal form."""


class _Document:
    """The description text with line-level edits located through YAML node marks.

    After a failed edit ``text`` is None and the caller falls back to the normal form.
    """

    def __init__(self, text: str) -> None:
        self.text: str | None = text

    def _apply(self, edit: Callable[[str], str]) -> None:
        if self.text is None:
            return
        try:
            self.text = edit(self.text)
        except (_Fallback, yaml.YAMLError, IndexError):
            self.text = None

    def remove_from_list(self, keys: list[str], value: str) -> None:
        def edit(text: str) -> str:
            key, seq = _locate(text, keys)
            index = _index_of(seq, value)
            return _remove_item(text, key, seq, index)

        self._apply(edit)

    def remove_index(self, keys: list[str], index: int) -> None:
        self._apply(lambda text: _remove_item(text, *_locate(text, keys), index))

    def append_to_list(self, keys: list[str], item: str, comment: str = "") -> None:
        def edit(text: str) -> str:
            try:
                key, seq = _locate(text, keys)
            except _Missing as missing:
                return _add_key(text, missing.mapping, missing.key, item, comment)
            return _append_item(text, key, seq, item, comment)

        self._apply(edit)

    def replace_in_list(self, keys: list[str], index: int, item: str) -> None:
        self._apply(lambda text: _replace_item(text, *_locate(text, keys), index, item))

    def remove_key(self, keys: list[str], name: str) -> None:
        def edit(text: str) -> str:
            key, mapping = _locate(text, keys)
            return _remove_mapping_entry(text, key, mapping, name)

        self._apply(edit)


class _Missing(_Fallback):
    def __init__(self, mapping: yaml.MappingNode, key: str) -> None:
        super().__init__(key)
        self.mapping, self.key = mapping, key


def _locate(text: str, keys: list[str]) -> tuple[yaml.Node, yaml.Node]:
    """(key node, value node) at the path of mapping keys; _Missing when the last key is absent."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    key_node: yaml.Node = node
    for position, key in enumerate(keys):
        if not isinstance(node, yaml.MappingNode) or node.flow_style:
            raise _Fallback(key)
        entry = next(((k, v) for k, v in node.value if k.value == key), None)
        if entry is None:
            if position == len(keys) - 1:
                raise _Missing(node, key)
            raise _Fallback(key)
        key_node, node = entry
    return key_node, node


def _index_of(seq: yaml.Node, value: str) -> int:
    if not isinstance(seq, yaml.SequenceNode):
        raise _Fallback(value)
    for index, item in enumerate(seq.value):
        if isinstance(item, yaml.ScalarNode) and item.value == value:
            return index
    raise _Fallback(value)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _last_line(node: yaml.Node) -> int:
    """The 0-based line of the last character of the node (block nodes end at the next token)."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _last_line(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _last_line(node.value[-1])
    end = node.end_mark
    if end.column == 0 and end.line > node.start_mark.line:
        return end.line - 1
    return end.line


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _is_single_line_flow(node: yaml.Node) -> bool:
    return bool(getattr(node, "flow_style", False)) and node.start_mark.line == node.end_mark.line


def _item_slices(text: str, seq: yaml.SequenceNode) -> list[str]:
    return [text[item.start_mark.index : item.end_mark.index] for item in seq.value]


def _replace_span(text: str, node: yaml.Node, replacement: str) -> str:
    return text[: node.start_mark.index] + replacement + text[node.end_mark.index :]


def _block_item_lines(text: str, seq: yaml.SequenceNode, index: int) -> tuple[int, int]:
    """First and last line of a block list item; its dash must start the first line."""
    item = seq.value[index]
    first, last = item.start_mark.line, _last_line(item)
    if not _lines(text)[first].lstrip().startswith("-"):
        raise _Fallback("item not on its dash line")
    return first, last


def _remove_item(text: str, key: yaml.Node, seq: yaml.Node, index: int) -> str:
    if not isinstance(seq, yaml.SequenceNode):
        raise _Fallback("not a list")
    if _is_single_line_flow(seq):
        kept = [s for i, s in enumerate(_item_slices(text, seq)) if i != index]
        return _replace_span(text, seq, "[" + ", ".join(kept) + "]")
    if seq.flow_style:
        raise _Fallback("multi-line flow list")
    first, last = _block_item_lines(text, seq, index)
    lines = _lines(text)
    if index > 0:
        # Comment lines right above the item (not above the first: those may be the list's) go with it.
        previous_end = _last_line(seq.value[index - 1])
        while first - 1 > previous_end and lines[first - 1].lstrip().startswith("#"):
            first -= 1
    remaining = lines[:first] + lines[last + 1 :]
    if len(seq.value) == 1:
        # The list becomes empty: `members: []` on the key's line.
        return _mark_empty(remaining, key)
    return "".join(remaining)


def _mark_empty(lines: list[str], key: yaml.Node, empty: str = "[]") -> str:
    line = lines[key.start_mark.line]
    colon = key.end_mark.column
    if line[colon : colon + 1] != ":":
        raise _Fallback("key not followed by a colon")
    lines[key.start_mark.line] = line[: colon + 1] + f" {empty}" + line[colon + 1 :]
    return "".join(lines)


def _append_item(text: str, key: yaml.Node, seq: yaml.Node, item: str, comment: str) -> str:
    suffix = f"  # {comment}" if comment else ""
    lines = _lines(text)
    indent = " " * (key.start_mark.column + 2)
    empty_flow = isinstance(seq, yaml.SequenceNode) and seq.flow_style and not seq.value
    if _is_null(seq) or empty_flow:
        # `members:`, `members: ~` or `members: []` -> a block list under the key.
        row = key.start_mark.line
        if seq.start_mark.index != seq.end_mark.index:
            if seq.end_mark.line != row:
                raise _Fallback("value below its key")
            line = lines[row]
            head = line[: seq.start_mark.column].rstrip()
            tail = line[seq.end_mark.column :].strip()
            lines[row] = head + (f"  {tail}" if tail else "") + "\n"
        lines.insert(row + 1, f"{indent}- {item}{suffix}\n")
        return "".join(lines)
    if not isinstance(seq, yaml.SequenceNode):
        raise _Fallback("not a list")
    if _is_single_line_flow(seq):
        return _replace_span(text, seq, "[" + ", ".join([*_item_slices(text, seq), item]) + "]")
    if seq.flow_style:
        raise _Fallback("multi-line flow list")
    last = _last_line(seq)
    dash = " " * seq.start_mark.column
    lines.insert(last + 1, f"{dash}- {item}{suffix}\n")
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    return "".join(lines)


def _replace_item(text: str, key: yaml.Node, seq: yaml.Node, index: int, item: str) -> str:
    if not isinstance(seq, yaml.SequenceNode):
        raise _Fallback("not a list")
    if _is_single_line_flow(seq):
        slices = _item_slices(text, seq)
        slices[index] = item
        return _replace_span(text, seq, "[" + ", ".join(slices) + "]")
    if seq.flow_style:
        raise _Fallback("multi-line flow list")
    first, last = _block_item_lines(text, seq, index)
    lines = _lines(text)
    dash = " " * seq.start_mark.column
    return "".join([*lines[:first], f"{dash}- {item}\n", *lines[last + 1 :]])


def _add_key(text: str, mapping: yaml.MappingNode, key: str, item: str, comment: str) -> str:
    if mapping.flow_style or not mapping.value:
        raise _Fallback("cannot add a key here")
    lines = _lines(text)
    last = _last_line(mapping)
    indent = " " * mapping.start_mark.column
    suffix = f"  # {comment}" if comment else ""
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines[last + 1 : last + 1] = [f"{indent}{key}:\n", f"{indent}  - {item}{suffix}\n"]
    return "".join(lines)


def _remove_mapping_entry(text: str, parent_key: yaml.Node, mapping: yaml.Node, name: str) -> str:
    if not isinstance(mapping, yaml.MappingNode) or mapping.flow_style:
        raise _Fallback("not a block mapping")
    entries = mapping.value
    position = next((i for i, (k, _) in enumerate(entries) if k.value == name), None)
    if position is None:
        raise _Fallback(name)
    key, value = entries[position]
    lines = _lines(text)
    first, last = key.start_mark.line, _last_line(value)
    # The blank lines that separated this entry from its neighbour go with it.
    if position < len(entries) - 1:
        while last + 1 < len(lines) and not lines[last + 1].strip():
            last += 1
    else:
        while first - 1 > _last_line(entries[position - 1][1]) and not lines[first - 1].strip():
            first -= 1
    remaining = lines[:first] + lines[last + 1 :]
    if len(entries) == 1:
        return _mark_empty(remaining, parent_key, "{}")
    return "".join(remaining)


# --- the normal form -------------------------------------------------------------------


def _scalar(value: object) -> str:
    """A YAML scalar, quoted only when it must be."""
    if isinstance(value, str) and PRINCIPAL_RE.match(value):
        return value
    return yaml.safe_dump([value], default_flow_style=True, width=10**9).strip()[1:-1]


def _flow(value: dict[str, object]) -> str:
    parts = []
    for key, item in value.items():
        if isinstance(item, list):
            parts.append(f"{key}: [" + ", ".join(_scalar(v) for v in item) + "]")
        else:
            parts.append(f"{key}: {_scalar(item)}")
    return "{" + ", ".join(parts) + "}"


def _leading_comments(text: str) -> str:
    header = []
    for line in text.splitlines():
        if not (line.startswith("#") or line.rstrip() == "---"):
            break
        header.append(line)
    return "\n".join(header) + "\n" if header else ""


def render_description(description: Description, header: str = "") -> str:
    """The description in its normal form: block mappings, one flow-style grant per line."""
    lines = [header.rstrip("\n")] if header else []
    lines.append("version: 1")
    lines.append("")
    lines.append("applications:" + ("" if description.applications else " {}"))
    for app in description.applications.values():
        lines.extend(_render_application(app))
    lines.append("")
    lines.append("teams:" + ("" if description.teams else " {}"))
    for team in description.teams.values():
        lines.extend(_render_team(team))
    lines.append("")
    lines.append("offboarded:" + ("" if description.offboarded else " []"))
    lines.extend(f"  - {principal}" for principal in description.offboarded)
    return "\n".join(lines) + "\n"


def _render_application(app: Application) -> list[str]:
    lines = [f"  {app.name}:", f"    principal: {app.principal}"]
    if app.description:
        lines.append(f"    description: {_scalar(app.description)}")
    return lines + _render_grants(app.grants)


def _render_team(team: Team) -> list[str]:
    lines = [f"  {team.name}:"]
    if team.description:
        lines.append(f"    description: {_scalar(team.description)}")
    lines.append("    members:" + ("" if team.members else " []"))
    lines.extend(f"      - {member}" for member in team.members)
    return lines + _render_grants(team.grants)


def _render_grants(grants: Iterable[Grant]) -> list[str]:
    grants = list(grants)
    return ["    grants:" + ("" if grants else " []")] + [f"      - {_flow(g.to_yaml())}" for g in grants]
