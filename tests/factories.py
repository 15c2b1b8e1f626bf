"""Generated test profiles: the offline randomuser source's own generator, never hand-written people."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from jobs.randomuser_server import generate_users


def generated_profiles(count: int, seed: str) -> list[dict[str, Any]]:
    return generate_users(count, seed=seed)


def leaf_values(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every leaf of a nested profile."""
    for name, value in record.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from leaf_values(value, path + ".")
        else:
            yield path, value


def with_value(record: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``record`` with the dotted ``path`` set to ``value`` (a poison message, say)."""
    changed = copy.deepcopy(dict(record))
    *parents, leaf = path.split(".")
    node = changed
    for name in parents:
        node = node[name]
    node[leaf] = value
    return changed
