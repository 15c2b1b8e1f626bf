"""The roles' templates and variables as Ansible renders them, on this machine.

One ``ansible-playbook`` run (connection local, one host in every group) loads the
defaults and vars of the named roles, then renders templates and variables into a
temporary directory: what a deploy would write, without a host or the rest of the role.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

HOST = "store1"
ADDRESS = "10.99.0.13"
GROUPS = (
    "kafka",
    "producer",
    "spark_master",
    "spark_workers",
    "stream_job",
    "cassandra",
    "mongodb",
    "dashboard",
    "monitoring",
)


def run_playbook(args: list[str], roles_path: list[Path] = ()) -> subprocess.CompletedProcess:
    """Run the project's ansible-playbook from the checkout with ``args``; the finished process."""
    return subprocess.run(  # noqa: S603 - fixed command
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ | {"ANSIBLE_ROLES_PATH": ":".join(str(p) for p in [*roles_path, REPO / "roles"])},
    )


def ansible_playbook(
    inventory: Path, playbook: Path, extra_vars: dict[str, Any], roles_path: list[Path] = ()
) -> str:
    """run_playbook of ``playbook`` on ``inventory``; its output (it must succeed)."""
    result = run_playbook(["-i", str(inventory), str(playbook), "-e", json.dumps(extra_vars)], roles_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout


def render(
    tmp_path: Path,
    roles: list[str],
    templates: dict[str, tuple[str, dict[str, Any]]],
    values: dict[str, str] | None = None,
    extra_vars: dict[str, Any] | None = None,
) -> dict[str, str]:
    """``templates``: output name -> (template under roles/, task vars); ``values``: output
    name -> a Jinja expression, rendered as JSON. Returns the rendered texts by name."""
    out = tmp_path / "rendered"
    out.mkdir(parents=True, exist_ok=True)
    var_files = [
        str(path)
        for role in ("bdf_secrets", "bdf_defaults", *roles)
        for path in (
            REPO / "roles" / role / "defaults" / "main.yml",
            REPO / "roles" / role / "vars" / "main.yml",
        )
        if path.exists()
    ]
    tasks = [
        {
            "name": f"Render {name}",
            "ansible.builtin.template": {
                "src": str(REPO / "roles" / src),
                "dest": str(out / name),
                "mode": "0600",
            },
            "vars": task_vars,
        }
        for name, (src, task_vars) in templates.items()
    ]
    tasks += [
        {
            "name": f"Render {name}",
            "ansible.builtin.copy": {
                "content": "{{ (" + expression + ") | to_json }}",
                "dest": str(out / name),
                "mode": "0600",
            },
        }
        for name, expression in (values or {}).items()
    ]
    play = [
        {"name": "Render", "hosts": "all", "gather_facts": False, "vars_files": var_files, "tasks": tasks}
    ]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play))
    host = {
        "ansible_connection": "local",
        "ansible_host": ADDRESS,
        "ansible_python_interpreter": str(REPO / ".venv" / "bin" / "python"),
    }
    inventory = {"all": {"hosts": {HOST: host}, "children": {g: {"hosts": {HOST: None}} for g in GROUPS}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    ansible_playbook(
        tmp_path / "inventory.yml",
        tmp_path / "render.yml",
        {"bdf_project_dir": str(REPO), "bdf_deployment": "unit"} | (extra_vars or {}),
    )
    return {path.name: path.read_text() for path in out.iterdir()}


def exec_start(unit: str) -> list[str]:
    """A systemd unit's ExecStart as its argument list (continuation lines joined)."""
    text = unit.replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()
