"""The README's Requirements, deps/debian-12.txt, `make deps` and `make help` agree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def deps_groups() -> dict[str, list[str]]:
    groups = {}
    for line in (ROOT / "deps/debian-12.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, packages = line.partition(":")
            groups[name.strip()] = packages.split()
    return groups


def readme_block(name: str) -> str:
    match = re.search(
        rf"^<!-- requirements:{name} -->\n```sh\n(.*?)^```\n<!-- /requirements:{name} -->$",
        README,
        re.MULTILINE | re.DOTALL,
    )
    assert match, f"README.md has no <!-- requirements:{name} --> sh block"
    return match.group(1)


def documented_targets() -> list[str]:
    return re.findall(r"^([a-zA-Z0-9_.-]+):.*## ", MAKEFILE, re.MULTILINE)


def test_readme_test_block_installs_exactly_the_test_group() -> None:
    installs = [
        line.split()[2:] for line in readme_block("test").splitlines() if line.startswith("apt-get install")
    ]
    assert len(installs) == 1
    assert installs[0] == deps_groups()["test"]


def test_readme_demo_block_is_make_deps() -> None:
    assert readme_block("demo").split() == ["make", "deps"]


def section(title: str) -> str:
    text = README[README.index(f"\n## {title}\n") + 1 :]
    return text[: text.index("\n## ")]


def test_readme_groups_table_lists_every_group_of_the_deps_file() -> None:
    rows = dict(re.findall(r"^\| `([a-z0-9_-]+)` \| `([^`]+)` \|", section("Requirements"), re.MULTILINE))
    assert {name: packages.split() for name, packages in rows.items()} == deps_groups()


def test_make_deps_and_lab_deps_default_to_the_same_groups() -> None:
    makefile_default = re.search(r"^DEPS \?= (.+)$", MAKEFILE, re.MULTILINE)
    lab_default = re.search(r"\$\{DEPS:-([^}]+)\}", (ROOT / "lab/lab.sh").read_text())
    assert makefile_default and lab_default
    assert makefile_default.group(1).split() == lab_default.group(1).split()
    assert set(lab_default.group(1).split()) <= set(deps_groups())


MAKE = shutil.which("make")


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_make_help_lists_every_documented_target() -> None:
    out = subprocess.run(  # noqa: S603 - fixed command
        [str(MAKE), "--no-print-directory", "-s", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = [re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0] for line in out.splitlines() if line.strip()]
    assert "e2e" in listed
    assert listed == documented_targets()


def test_readme_targets_table_has_every_documented_target() -> None:
    table = section("Make targets")
    rows = " ".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `make"))
    in_readme = set(re.findall(r"`make ([a-zA-Z0-9_.-]+)", rows))
    missing = [target for target in documented_targets() if target not in in_readme]
    assert missing == []
