"""The lab inventories as lab/topology.py reads them: the cluster lab (inventory/lab-cluster)
validates, has the groups and the replicated shape it claims, and can run beside the
small lab (inventory/lab); tests/lab.py finds its hosts by group."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "inventory" / "lab-cluster"
SMALL = REPO / "inventory" / "lab"


def _topology_module():
    spec = importlib.util.spec_from_file_location("lab_topology", REPO / "lab" / "topology.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOPOLOGY = _topology_module()


def load(inventory: Path, monkeypatch) -> dict:
    """lab/topology.py's view of ``inventory``, independent of this host's apt and DNS setup."""
    monkeypatch.setattr(TOPOLOGY, "INVENTORY_DIR", inventory)
    monkeypatch.setattr(TOPOLOGY, "_host_dns", lambda: ["192.0.2.53"])
    monkeypatch.setattr(TOPOLOGY, "_host_mirrors", lambda: ("http://deb.example/debian", ""))
    return TOPOLOGY.load_topology()


@pytest.fixture
def cluster(monkeypatch) -> dict:
    return load(CLUSTER, monkeypatch)


@pytest.fixture
def small(monkeypatch) -> dict:
    return load(SMALL, monkeypatch)


def test_cluster_lab_validates_with_every_required_group_populated(cluster):
    machines = [name for name, _ in cluster["machines"]]
    assert machines == ["node1", "node2", "node3", "ctl1", "worker1", "worker2"]
    assert [group for group in TOPOLOGY.REQUIRED_GROUPS if not cluster["groups"].get(group)] == []


def test_cluster_lab_has_three_kafka_and_three_cassandra_nodes_and_two_workers(cluster):
    groups = cluster["groups"]
    assert len(groups["kafka"]) == len(groups["cassandra"]) == 3
    assert len(groups["spark_workers"]) == 2


def test_cluster_lab_runs_the_stream_jobs_driver_on_no_spark_worker(cluster):
    groups = cluster["groups"]
    assert set(groups["stream_job"]).isdisjoint(groups["spark_workers"])
    assert groups["stream_job"] == groups["spark_master"]


def test_cluster_lab_addresses_are_distinct_host_addresses_of_its_subnet(cluster):
    subnet = ipaddress.IPv4Network(cluster["subnet"])
    addresses = [ipaddress.IPv4Address(addr) for _, addr in cluster["machines"]]
    assert all(addr in subnet for addr in addresses)
    assert str(subnet.network_address) not in {str(a) for a in addresses}
    assert len(set(addresses) | {ipaddress.IPv4Address(cluster["gateway"])}) == len(addresses) + 1


def test_cluster_lab_can_run_beside_the_small_lab(cluster, small):
    for key in ("bridge", "nft_table", "state_dir"):
        assert cluster[key] != small[key], key
    assert not ipaddress.IPv4Network(cluster["subnet"]).overlaps(ipaddress.IPv4Network(small["subnet"]))
    assert {name for name, _ in cluster["machines"]}.isdisjoint(name for name, _ in small["machines"])


def test_cluster_lab_sets_the_same_lab_keys_as_the_small_lab():
    def lab_keys(inventory: Path) -> set[str]:
        settings = yaml.safe_load((inventory / "group_vars" / "all.yml").read_text())
        return {key for key in settings if key.startswith("lab_")}

    assert lab_keys(CLUSTER) == lab_keys(SMALL)


def test_topology_group_prints_a_groups_addresses_in_inventory_order(cluster, capsys):
    TOPOLOGY.cmd_group(cluster, "kafka")
    assert capsys.readouterr().out.split() == ["10.78.0.11", "10.78.0.12", "10.78.0.13"]
    with pytest.raises(SystemExit, match="no group `spark` in"):
        TOPOLOGY.cmd_group(cluster, "spark")


@pytest.mark.parametrize(
    ("inventory", "expected"),
    [
        (
            "inventory/lab",
            {
                "secrets": ".secrets/lab",
                "kafka": "10.77.0.11:9092",
                "cassandra": ["10.77.0.13"],
                "roles": ["kafka1", "spark1", "spark1", "store1", "spark1"],
            },
        ),
        (
            "inventory/lab-cluster",
            {
                "secrets": ".secrets/lab-cluster",
                "kafka": "10.78.0.11:9092,10.78.0.12:9092,10.78.0.13:9092",
                "cassandra": ["10.78.0.11", "10.78.0.12", "10.78.0.13"],
                "roles": ["ctl1", "ctl1", "ctl1", "ctl1", "ctl1"],
            },
        ),
    ],
)
def test_lab_tests_find_the_hosts_of_the_lab_named_by_lab_inventory(inventory, expected):
    script = (
        "import json, tests.lab as l\n"
        "print(json.dumps({'secrets': str(l.SECRETS.relative_to(l.REPO)), 'kafka': l.KAFKA,"
        " 'cassandra': l.cassandra_connection().hosts,"
        " 'roles': [l.PRODUCER_HOST, l.STREAM_HOST, l.SPARK_MASTER_HOST, l.MONGODB_HOST, l.DASHBOARD_HOST]}))"
    )
    result = subprocess.run(  # noqa: S603 - fixed command
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=os.environ | {"LAB_INVENTORY": inventory, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
