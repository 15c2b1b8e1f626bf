"""The local lab (lab/lab.sh): machines boot, answer ssh, see each other, reach apt over NAT.

Runs only with LAB=1, as root, on a Linux host with debootstrap, systemd-nspawn and nft
(`lab/lab.sh deps`). It brings the lab up itself (`lab/lab.sh up`: about 2 minutes the
first time, seconds when the base root file system is cached or the lab already runs)
and leaves it running; `lab/lab.sh down` stops it. The lab is LAB_INVENTORY's
(default inventory/lab), as for lab/lab.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.lab import INVENTORY_DIR as INVENTORY
from tests.lab import LAB_ENV, REPO

LAB_SH = REPO / "lab" / "lab.sh"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("LAB") != "1", reason="lab tests boot containers: set LAB=1 to run them"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (bridge, nftables, systemd-nspawn)"),
]


def _run(*cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(str(cmd[0])) or str(cmd[0])
    return subprocess.run(  # noqa: S603 - fixed commands, no shell
        [exe, *map(str, cmd[1:])], capture_output=True, text=True, timeout=timeout, check=False, env=LAB_ENV
    )


class Lab:
    def __init__(self) -> None:
        inventory = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
        self.settings = yaml.safe_load((INVENTORY / "group_vars" / "all.yml").read_text())
        self.machines: dict[str, str] = {
            name: hostvars["ansible_host"] for name, hostvars in inventory["all"]["hosts"].items()
        }
        self.state_dir = Path(self.settings["lab_state_dir"])

    def up(self) -> subprocess.CompletedProcess[str]:
        return _run("bash", LAB_SH, "up", timeout=900)

    def ssh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run("bash", LAB_SH, "ssh", name, command, timeout=timeout)

    def nspawn_pids(self) -> dict[str, str]:
        return {name: (self.state_dir / "run" / f"{name}.pid").read_text().strip() for name in self.machines}


@pytest.fixture(scope="module")
def lab() -> Lab:
    lab = Lab()
    result = lab.up()
    assert result.returncode == 0, f"lab/lab.sh up failed:\n{result.stderr}"
    return lab


def test_every_machine_answers_ssh_with_its_own_hostname(lab: Lab) -> None:
    for name in lab.machines:
        result = lab.ssh(name, "hostname")
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.strip() == name


def test_every_machine_reports_systemd_running_with_no_failed_unit(lab: Lab) -> None:
    for name in lab.machines:
        result = lab.ssh(name, "systemctl is-system-running; systemctl --failed --no-legend --plain")
        assert result.stdout.strip() == "running", f"{name}: {result.stdout}"


def test_machines_have_distinct_machine_ids_and_host_keys(lab: Lab) -> None:
    ids = {lab.ssh(name, "cat /etc/machine-id").stdout.strip() for name in lab.machines}
    keys = {lab.ssh(name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for name in lab.machines}
    assert len(ids) == len(keys) == len(lab.machines)


def test_machines_reach_each_other_by_name_over_the_bridge(lab: Lab) -> None:
    for name in lab.machines:
        for other, address in lab.machines.items():
            if other == name:
                continue
            route = lab.ssh(name, f"ip -4 route get {address}").stdout
            assert "dev host0" in route and " via " not in route, f"{name} -> {other}: {route}"
            ping = lab.ssh(name, f"ping -c 1 -W 2 {other}")
            assert ping.returncode == 0, f"{name} cannot ping {other}: {ping.stdout}{ping.stderr}"
            assert f"({address})" in ping.stdout, f"{other} does not resolve to {address} on {name}"


def test_masquerade_lives_in_the_labs_own_nftables_table(lab: Lab) -> None:
    table = _run("nft", "list", "table", "ip", lab.settings["lab_nft_table"])
    assert table.returncode == 0, table.stderr
    assert f"ip saddr {lab.settings['lab_subnet']}" in table.stdout and "masquerade" in table.stdout


def test_apt_get_update_works_through_nat_on_every_machine(lab: Lab) -> None:
    for name in lab.machines:
        result = lab.ssh(name, "apt-get update -q -o APT::Update::Error-Mode=any", timeout=300)
        assert result.returncode == 0, f"{name}: apt-get update failed:\n{result.stdout}{result.stderr}"


def test_ansible_pings_every_lab_host(lab: Lab) -> None:
    # The project's ansible (.venv, next to this interpreter), as make deploy runs it.
    ansible = Path(sys.executable).parent / "ansible"
    assert ansible.exists(), f"{ansible} is missing: make install (or make deps) puts ansible-core in .venv"
    result = _run(str(ansible), "-i", INVENTORY / "hosts.yml", "all", "-m", "ping", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in lab.machines:
        assert f"{name} | SUCCESS" in result.stdout


def test_second_up_changes_nothing_and_keeps_machines_running(lab: Lab) -> None:
    pids_before = lab.nspawn_pids()
    boots_before = {name: lab.ssh(name, "ps -o lstart= -p 1").stdout for name in lab.machines}
    result = lab.up()
    assert result.returncode == 0, result.stderr
    assert "changed=0" in result.stderr, result.stderr
    assert lab.nspawn_pids() == pids_before
    assert {name: lab.ssh(name, "ps -o lstart= -p 1").stdout for name in lab.machines} == boots_before
