"""playbooks/validate.yml against small inventories: replication defaults follow the
inventory, and an explicit value the inventory cannot hold fails naming the key."""

from __future__ import annotations

import json

import yaml

from tests.roles import run_playbook

GROUPS = ("spark_master", "spark_workers", "stream_job", "producer", "mongodb")


def validate(tmp_path, kafka_hosts: int, kafka_vars: dict | None = None, extra_groups: dict | None = None):
    hosts = {f"k{i}": {"ansible_host": f"10.99.1.{i}"} for i in range(1, kafka_hosts + 1)}
    hosts["s1"] = {"ansible_host": "10.99.2.1"}
    children = {group: {"hosts": {"s1": None}} for group in (*GROUPS, "cassandra")}
    children["kafka"] = {"hosts": dict.fromkeys(hosts.keys() - {"s1"})}
    children |= {group: {"hosts": dict.fromkeys(members)} for group, members in (extra_groups or {}).items()}
    inventory = tmp_path / "inv"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts, "children": children}}))
    if kafka_vars:
        (inventory / "group_vars" / "kafka.yml").write_text(yaml.safe_dump(kafka_vars))
    (tmp_path / "manifest.json").write_text("{}")
    return run_playbook(
        [
            "-i",
            str(inventory / "hosts.yml"),
            "playbooks/validate.yml",
            "-e",
            json.dumps({"artifacts_dir": str(tmp_path)}),
        ]
    )


def test_replication_defaults_pass_on_one_node(tmp_path):
    result = validate(tmp_path, 1)
    assert result.returncode == 0, result.stdout[-3000:]


def test_explicit_rf_3_on_one_broker_fails_naming_the_key_and_inventory(tmp_path):
    result = validate(tmp_path, 1, {"kafka_default_replication_factor": 3})
    assert result.returncode != 0
    assert "kafka_default_replication_factor is 3" in result.stdout
    assert "hosts.yml" in result.stdout


def test_explicit_rf_3_on_three_brokers_passes(tmp_path):
    result = validate(tmp_path, 3, {"kafka_default_replication_factor": 3})
    assert result.returncode == 0, result.stdout[-3000:]


def test_min_isr_above_rf_fails(tmp_path):
    result = validate(tmp_path, 3, {"kafka_min_insync_replicas": 4})
    assert result.returncode != 0
    assert "kafka_min_insync_replicas is 4" in result.stdout


def test_a_broker_added_beside_a_three_voter_quorum_passes(tmp_path):
    result = validate(tmp_path, 4, extra_groups={"kafka_controllers": ["k1", "k2", "k3"]})
    assert result.returncode == 0, result.stdout[-3000:]


def test_a_voter_outside_the_kafka_group_fails(tmp_path):
    result = validate(tmp_path, 3, extra_groups={"kafka_controllers": ["k1", "s1"]})
    assert result.returncode != 0
    assert "kafka_controllers (k1, s1)" in result.stdout


def test_a_controller_only_node_that_is_no_voter_fails(tmp_path):
    groups = {"kafka_controllers": ["k1", "k2", "k3"], "kafka_controllers_only": ["k4"]}
    result = validate(tmp_path, 4, extra_groups=groups)
    assert result.returncode != 0
    assert "kafka_controllers_only (k4)" in result.stdout
