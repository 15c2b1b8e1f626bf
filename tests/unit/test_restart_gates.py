"""The restarts' health gates (roles/kafka cluster_health.yml) on this machine against
stand-in Kafka tools that print what the real ones print, and playbooks/restart.yml's
refusal of an unknown group before it contacts any host.

What the gates wait for on real brokers is only seen on the lab (a restart of a
running cluster); these tests prove the conditions pass and fail on the tools' output."""

from __future__ import annotations

import json
import stat
import subprocess
from typing import Any

import pytest
import yaml

from tests.roles import REPO, run_playbook

BROKERS = ("kafka1", "kafka2", "kafka3")
HEADER = (
    "NodeId  DirectoryId             LogEndOffset  Lag  LastFetchTimestamp  LastCaughtUpTimestamp  Status"
)
HEALTHY_QUORUM = [
    HEADER,
    "1  pvVsnKq3R3mE2jXXd8IvjA  1204  0  1764676800000  1764676800000  Leader",
    "2  0mWuTbBJS1uDc2Mh9hJzTQ  1204  0  1764676800000  1764676800000  Follower",
    "3  ZkiqnG3lQLSfgO7rJy4v1Q  1203  1  1764676800000  1764676800000  Follower",
    "4  ljI7mRkLRguW2t4b0PFnGQ  1204  0  1764676800000  1764676800000  Observer",
]
UNDER_REPLICATED = "\tTopic: bdf.profiles\tPartition: 2\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2"

PLAYBOOK = """\
- name: The Kafka restart gate (roles/kafka cluster_health.yml)
  hosts: kafka1
  gather_facts: false
  tasks:
    - name: Cluster health
      ansible.builtin.include_role:
        name: kafka
        tasks_from: cluster_health.yml
"""


def gate(
    tmp_path, under_replicated: list[str], quorum: list[str], *, timeout: int = 1, tool_seconds: int = 0
) -> subprocess.CompletedProcess:
    """cluster_health.yml with kafka-topics.sh and kafka-metadata-quorum.sh printing these
    lines, each call taking tool_seconds (a JVM on a loaded host)."""
    bin_dir = tmp_path / "kafka" / "bin"
    bin_dir.mkdir(parents=True)
    for name, lines in {"kafka-topics.sh": under_replicated, "kafka-metadata-quorum.sh": quorum}.items():
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\nsleep {tool_seconds}\ncat <<'EOF'\n"
            + "".join(f"{line}\n" for line in lines)
            + "EOF\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(REPO / ".venv" / "bin" / "python"),
    }
    inventory = {
        "all": {
            "children": {
                "kafka": {
                    "hosts": {
                        name: host | {"ansible_host": f"10.99.0.{i}"} for i, name in enumerate(BROKERS, 11)
                    }
                }
            }
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "gate.yml").write_text(PLAYBOOK)
    extra = {
        "bdf_project_dir": str(REPO),
        "bdf_deployment": "unit",
        "kafka_install_dir": str(tmp_path / "kafka"),
        "kafka_health_timeout_seconds": timeout,  # 1: two attempts, 5 s apart
    }
    return run_playbook(
        ["-i", str(tmp_path / "inventory.yml"), str(tmp_path / "gate.yml"), "-e", json.dumps(extra)]
    )


def test_kafka_gate_passes_with_no_under_replicated_partition_and_every_voter_caught_up(tmp_path):
    result = gate(tmp_path, [], HEALTHY_QUORUM)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize(
    ("under_replicated", "quorum"),
    [
        ([UNDER_REPLICATED], HEALTHY_QUORUM),
        (
            [],
            [
                *HEALTHY_QUORUM[:3],
                HEALTHY_QUORUM[3].replace(" 1203  1 ", " 203  1001 "),
                HEALTHY_QUORUM[4],
            ],
        ),
        ([], [line for line in HEALTHY_QUORUM if not line.startswith("3 ")]),
        ([], [line.replace("Leader", "Follower") for line in HEALTHY_QUORUM]),
        ([], []),
    ],
    ids=["under-replicated", "voter-lagging", "voter-missing", "no-leader", "no-answer"],
)
def test_kafka_gate_fails_until_the_cluster_is_whole(tmp_path, under_replicated, quorum):
    result = gate(tmp_path, under_replicated, quorum)
    assert result.returncode != 0
    failed = "no partition is under-replicated" if under_replicated else "every voter caught up"
    assert (
        f"Cluster health | Wait until {'' if under_replicated else 'the quorum has a leader and '}{failed}"
        in (result.stdout)
    )
    assert "FAILED" in result.stdout.split(failed)[-1]


def test_kafka_gate_ends_at_its_deadline_when_each_try_is_slow(tmp_path):
    """A 10 s limit allows two tries 5 s apart (plus the first); with each try taking 3 s
    the deadline ends the wait after the second, not after the count of tries."""
    result = gate(tmp_path, [UNDER_REPLICATED], HEALTHY_QUORUM, timeout=10, tool_seconds=3)
    assert result.returncode != 0
    retried = [line for line in result.stdout.splitlines() if line.startswith("FAILED - RETRYING")]
    assert len(retried) == 1, result.stdout[-3000:]  # the count of tries would retry twice


def test_restart_refuses_an_unknown_group_before_contacting_a_host(tmp_path):
    # An address that cannot answer: any attempt to reach it would show as UNREACHABLE.
    inventory = {"all": {"children": {"kafka": {"hosts": {"kafka1": {"ansible_host": "192.0.2.1"}}}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    result = run_playbook(
        ["-i", str(tmp_path / "inventory.yml"), "playbooks/restart.yml", "-e", "restart_group=nope"]
    )
    assert result.returncode != 0
    assert "restart_group=nope" in result.stdout
    assert (
        "kafka, cassandra, spark_workers, spark_master, stream_job, mongodb, dashboard, producer"
        in result.stdout
    )
    assert "UNREACHABLE" not in result.stdout
    assert "kafka1" not in result.stdout


def test_restart_knows_the_restart_tasks_of_every_group():
    groups = yaml.safe_load((REPO / "playbooks" / "vars" / "restart_groups.yml").read_text())[
        "restart_groups"
    ]
    for group, how in groups.items():
        assert (REPO / "roles" / how["role"] / "tasks" / how["tasks"]).exists(), group


def load(path: str) -> Any:
    """A YAML file of the checkout."""
    return yaml.safe_load((REPO / path).read_text())


def test_kafka_restarts_running_nodes_one_at_a_time_not_a_new_cluster():
    tasks = load("roles/kafka/tasks/main.yml")
    names = [task["name"] for task in tasks]
    # The handler only marks the node, and only when it ran before this play started it.
    (handler,) = load("roles/kafka/handlers/main.yml")
    marks = handler["ansible.builtin.set_fact"]["kafka_restart_pending"]
    assert "kafka_running_before.status" in marks and "== 'active'" in marks
    running = next(t for t in tasks if t.get("register") == "kafka_running_before")
    assert names.index(running["name"]) < names.index("Enable and start Kafka")
    # After the handlers: one turn per marked node, in which only that node restarts.
    rolling = next(t for t in tasks if t.get("loop") == "{{ kafka_restart_hosts }}")
    assert rolling["ansible.builtin.include_tasks"] == "restart_and_wait.yml"
    assert rolling["loop_control"] == {"loop_var": "kafka_restart_host"}
    (turn,) = load("roles/kafka/tasks/restart_and_wait.yml")
    assert turn["when"] == "inventory_hostname == kafka_restart_host | default(inventory_hostname)"
    assert turn["any_errors_fatal"] is True
    assert [t.get("ansible.builtin.include_tasks") for t in turn["block"][1:]] == [
        "health_check.yml",
        "cluster_health.yml",
    ]
    site = load("playbooks/site.yml")
    assert "serial" not in next(play for play in site if play.get("hosts") == "kafka")


def test_spark_workers_restart_one_at_a_time_until_alive_at_the_master():
    tasks = load("roles/spark/tasks/main.yml")
    rolling = next(t for t in tasks if t.get("loop") == "{{ spark_restart_hosts }}")
    assert rolling["ansible.builtin.include_tasks"] == "restart_worker.yml"
    (turn,) = load("roles/spark/tasks/restart_worker.yml")
    assert turn["any_errors_fatal"] is True
    wait = turn["block"][-1]
    assert wait["delegate_to"] == "{{ groups['spark_master'][0] }}"
    assert "'ALIVE'" in wait["until"]


def test_makefile_restart_target_runs_the_playbook():
    text = (REPO / "Makefile").read_text()
    assert "\nrestart: install ## " in text
    assert "playbooks/restart.yml -e restart_group=$(GROUP)" in text
    assert "| `make restart GROUP=<group> INVENTORY=...` |" in (REPO / "README.md").read_text()
