#!/usr/bin/env python3
"""Print [project.dependencies] of a pyproject.toml, one requirement a line.

Usage: pyproject_requirements.py PYPROJECT.toml [EXTRA_REQUIREMENT ...]
Extra requirements given as arguments are printed after them.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(sys.argv[1])
    try:
        project = tomllib.loads(path.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        print(f"cannot read [project] from {path}: {exc}", file=sys.stderr)
        return 1
    for req in [*project.get("dependencies", []), *sys.argv[2:]]:
        print(req.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
