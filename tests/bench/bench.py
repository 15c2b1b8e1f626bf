"""`make bench`: the deployed lab's pipeline against the raw limits of the same machine, one run.

Stages (each prints what it measured; every number comes from this run):

- ``limits``: Kafka produce and consume rates for the profiles' own JSON
  (kafka-producer/consumer-perf-test with the producer's client settings), a tight
  prepared-statement write loop into a copy of the profile table with rows of the
  stored shape, and the job's transformation on a static DataFrame (local Spark).
- ``naive``: the peers' way, measured the same way: a row-at-a-time Python UDF
  encrypting each field, then one synchronous INSERT per row.
- ``source``: the offline randomuser source over HTTP on the producer host.
- ``saturation``: the real bdf-producer at full speed, then the stream job draining
  it into Cassandra and MongoDB: steady-state profiles/s (the middle 80 % of the
  write times), latency percentiles, CPU seconds and peak memory per service, disk
  bytes per stored profile.
- ``latency``: the producer at a fixed rate (1,000 profiles/s in one-second batches):
  latency percentiles from Kafka's CreateTime to Cassandra's write time of the row.

The producer service is stopped while the benchmark runs and started again at the end.
Results: a table on stdout and a JSON file in tests/bench/results/ (with the machine).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from jobs.aggregates import BATCHES_COLLECTION
from jobs.randomuser_server import generate_users
from tests.lab import (
    AGGREGATES_DB,
    CASSANDRA_HOST,
    CASSANDRA_HOSTS,
    HOSTS,
    INVENTORY_ARG,
    KAFKA,
    KAFKA_HOSTS,
    KEYSPACE,
    LAB_ENV,
    MONGODB_HOST,
    PRODUCER_HOST,
    REPO,
    SECRETS,
    SPARK_MASTER_HOST,
    SPARK_WORKER_HOSTS,
    STREAM_HOST,
    TABLE,
    by_host,
    cassandra_cluster,
    ssh,
    stream_mongo_client,
)

STAGES = ("source", "limits", "naive", "saturation", "latency")
VENV = "/opt/bigdataflow/venv"
JVM_JAR = REPO / ".artifacts" / "jvm" / "bigdataflow-jvm.jar"
KAFKA_BIN = "/opt/kafka/bin"
ADMIN_CONFIG = "/etc/kafka/admin-client.properties"
NODETOOL = "CASSANDRA_CONF=/etc/cassandra /opt/cassandra/bin/nodetool"
# The producer's librdkafka settings (jobs/producer.py kafka_config), for the raw Kafka limit.
PRODUCER_PROPS = "acks=all enable.idempotence=true compression.type=zstd linger.ms=50"
# host -> systemd units whose CPU and memory the saturation stage accounts for
SERVICES = by_host(
    *((host, ["kafka"]) for host in KAFKA_HOSTS),
    (PRODUCER_HOST, ["bdf-randomuser"]),
    (SPARK_MASTER_HOST, ["spark-master"]),
    *((host, ["spark-worker"]) for host in SPARK_WORKER_HOSTS),
    (STREAM_HOST, ["user-profiles-stream"]),
    *((host, ["cassandra"]) for host in CASSANDRA_HOSTS),
    (MONGODB_HOST, ["ferretdb", "postgresql@15-main"]),
)
# The Kafka command-line tools run on the first broker.
BROKER_HOST = KAFKA_HOSTS[0]
BENCH_TABLE = "bench_profiles"


@dataclass
class Figure:
    stage: str
    metric: str
    value: float
    unit: str
    note: str = ""


class Report:
    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def add(self, stage: str, metric: str, value: float, unit: str, note: str = "") -> float:
        figure = Figure(stage, metric, round(value, 3), unit, note)
        self.figures.append(figure)
        click.echo(f"  {metric}: {figure.value:,} {unit} {note}".rstrip(), err=True)
        return value

    def value(self, stage: str, metric: str) -> float | None:
        return next((f.value for f in self.figures if f.stage == stage and f.metric == metric), None)

    def table(self) -> str:
        width = max(len(f.metric) for f in self.figures)
        lines = [f"{'stage':<11} {'metric':<{width}} {'value':>14}  unit", "-" * (width + 40)]
        for f in self.figures:
            lines.append(f"{f.stage:<11} {f.metric:<{width}} {f.value:>14,}  {f.unit} {f.note}".rstrip())
        return "\n".join(lines)


def remote(host: str, command: str, timeout: float = 1800) -> str:
    result = ssh(host, command, timeout=timeout)
    if result.returncode != 0:
        raise click.ClickException(f"on {host}: `{command[:80]}` failed: {result.stderr.strip()[-800:]}")
    return result.stdout


def timed_remote(host: str, command: str, timeout: float = 1800) -> tuple[float, str]:
    """Seconds the command took on the host (its own clock: no ssh set-up in the figure), output."""
    out = remote(host, f"s=$(date +%s.%N); {command}; e=$(date +%s.%N); echo __elapsed $s $e", timeout)
    start, end = re.findall(r"__elapsed (\S+) (\S+)", out)[-1]
    return float(end) - float(start), out


def profile_messages(count: int, seed: str) -> list[bytes]:
    """Synthetic profiles as the producer publishes them (orjson of the API's user)."""
    return [orjson.dumps(user) for user in generate_users(count, seed)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# --- raw limits ------------------------------------------------------------------------------------


def kafka_limits(report: Report, records: int, stamp: str) -> None:
    topic = f"bench-perf-{stamp}"
    payloads = b"\n".join(profile_messages(2000, f"bench-payload-{stamp}"))
    payload_file = f"/tmp/{topic}.jsonl"  # noqa: S108 - on the lab machine, removed below
    common = f"--bootstrap-server {KAFKA} --command-config {ADMIN_CONFIG}"
    write = subprocess.run(  # noqa: S603
        ["bash", str(REPO / "lab" / "lab.sh"), "ssh", BROKER_HOST, f"cat > {payload_file}"],  # noqa: S607
        input=payloads,
        capture_output=True,
        check=False,
        env=LAB_ENV,
    )
    assert write.returncode == 0, write.stderr
    remote(BROKER_HOST, f"{KAFKA_BIN}/kafka-topics.sh {common} --create --topic {topic} --partitions 6")
    try:
        _, out = timed_remote(
            BROKER_HOST,
            f"{KAFKA_BIN}/kafka-producer-perf-test.sh {common} --topic {topic} --num-records {records}"
            f" --throughput -1 --payload-file {payload_file}"
            f" --producer-props {PRODUCER_PROPS}",
        )
        rate = re.findall(r"([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency", out)[-1]
        report.add(
            "limits", "kafka produce", float(rate[0]), "msg/s", f"({rate[1]} MB/s, profile JSON, zstd)"
        )
        _, out = timed_remote(
            BROKER_HOST,
            f"{KAFKA_BIN}/kafka-consumer-perf-test.sh {common} --topic {topic} --num-records {records}"
            f" --group {topic} --timeout 120000",
        )
        header, values = [line for line in out.splitlines() if "," in line][-2:]
        stats = dict(
            zip([h.strip() for h in header.split(",")], [v.strip() for v in values.split(",")], strict=False)
        )
        report.add("limits", "kafka consume", float(stats["fetch.nMsg.sec"]), "msg/s", "(fetch time only)")
    finally:
        ssh(
            BROKER_HOST,
            f"{KAFKA_BIN}/kafka-topics.sh {common} --delete --topic {topic}; rm -f {payload_file}",
        )


@contextmanager
def cassandra_admin() -> Iterator[Any]:
    cluster = cassandra_cluster("bdf_admin", "cassandra-admin")
    try:
        yield cluster.connect(KEYSPACE)
    finally:
        cluster.shutdown()


@contextmanager
def bench_table(session: Any) -> Iterator[str]:
    """A copy of the profile table's columns; dropped (and its snapshot cleared) afterwards."""
    columns = session.execute(
        "SELECT column_name, type FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
        (KEYSPACE, TABLE),
    )
    definition = ", ".join(f"{c.column_name} {c.type}" for c in columns)
    session.execute(f"DROP TABLE IF EXISTS {BENCH_TABLE}", timeout=120)
    session.execute(f"CREATE TABLE {BENCH_TABLE} ({definition}, PRIMARY KEY (user_id))", timeout=120)
    try:
        yield BENCH_TABLE
    finally:
        session.execute(f"DROP TABLE IF EXISTS {BENCH_TABLE}", timeout=120)
        for host in CASSANDRA_HOSTS:  # DROP TABLE leaves a snapshot on every replica
            ssh(host, f"{NODETOOL} clearsnapshot --all -- {KEYSPACE}")


def stored_shape_rows(session: Any, count: int) -> Iterator[tuple[Any, ...]]:
    """``count`` rows shaped like stored profiles (real ciphertexts of lab rows), fresh user ids."""
    samples = [tuple(row) for row in session.execute(f"SELECT * FROM {TABLE} LIMIT 1000")]  # noqa: S608
    if not samples:
        raise click.ClickException("the profile table is empty: let the pipeline run first")
    for index in range(count):
        yield (uuid.uuid4(), *samples[index % len(samples)][1:])


def cassandra_limit(report: Report, rows: int) -> None:
    from cassandra.concurrent import execute_concurrent_with_args

    with cassandra_admin() as session, bench_table(session) as table:
        names = [c for c in session.execute(f"SELECT * FROM {TABLE} LIMIT 1").column_names]  # noqa: S608
        insert = session.prepare(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608
        )
        pending = list(stored_shape_rows(session, rows))
        started, retried = time.perf_counter(), 0
        for _ in range(5):  # an overloaded node refuses some requests: they are sent again
            results = execute_concurrent_with_args(session, insert, pending, concurrency=128)
            pending = [args for (ok, _), args in zip(results, pending, strict=True) if not ok]
            if not pending:
                break
            retried += len(pending)
            time.sleep(1)
        elapsed = time.perf_counter() - started
        if pending:
            raise click.ClickException(f"{len(pending)} rows not written after 5 attempts")
    note = f"(prepared INSERTs, 128 in flight, 1 client, {retried} retried)"
    report.add("limits", "cassandra write", rows / elapsed, "rows/s", note)


def spark_session() -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback: the host name may not resolve
    return (
        SparkSession.builder.master("local[2]")
        .appName("bdf-bench")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "4g")  # the static DataFrame is built in the driver
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.jars", str(JVM_JAR))  # the job's contract validator (make artifacts builds it)
        .getOrCreate()
    )


def best_of(runs: int, action: Callable[[], None]) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def lab_keys() -> Any:
    from bdf.keyring import load_keyring

    return load_keyring(SECRETS / "profile-keys.json")


def transform_limit(report: Report, rows: int, spark: Any, messages: Any, keys: Any) -> None:
    """The job's plan (messages opened, checked, encrypted) on a static DataFrame of sealed
    messages, written nowhere."""
    from jobs.transform import prepare, stored_rows

    stored = stored_rows(prepare(messages, keys, 1_048_576))
    seconds = best_of(3, lambda: stored.write.format("noop").mode("overwrite").save())
    report.add(
        "limits", "transformation", rows / seconds, "rows/s", "(static DataFrame, local[2], best of 3)"
    )


def ledger_limit(report: Report, rows: int, messages: Any, keys: Any) -> None:
    """The aggregates' ledger on the driver: the facts of ``rows`` new users applied in one
    micro-batch, into a new ledger file (the job's cost per newly counted profile)."""
    from jobs.sinks import AggregateLedger
    from jobs.transform import aggregate_fact_lines, prepare

    (lines,) = prepare(messages, keys, 1_048_576).agg(aggregate_fact_lines()).first()
    with tempfile.TemporaryDirectory() as folder:
        ledger = AggregateLedger(Path(folder) / "ledger" / "ledger.sqlite")
        started = time.process_time()
        ledger.apply(lines)
        seconds = time.process_time() - started
        ledger.close()
        size = sum(path.stat().st_size for path in (Path(folder) / "ledger").iterdir())
    note = "(driver, one batch of new users)"
    report.add("limits", "ledger apply", seconds / rows * 1e6, "us CPU/profile", note)
    report.add("limits", "ledger size", size / rows, "bytes/user")


# --- the naive baseline ----------------------------------------------------------------------------


def naive_baseline(report: Report, spark: Any, messages: Any, rows: int, keys: Any) -> None:
    """Row-at-a-time Python UDFs (the message opened, AES-GCM per field), then one
    synchronous INSERT per row."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from jobs.message_crypto import MessageKeys

    key = os.urandom(32)
    message_keys = MessageKeys.of(keys)

    @F.udf(T.BinaryType())
    def encrypt(text: str | None) -> bytes | None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if text is None:
            return None
        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, text.encode(), None)

    @F.udf(T.StringType())
    def field(value: bytes, path: str) -> str | None:
        node: Any = json.loads(message_keys.open(value, "user_profiles"))
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return None if node is None else str(node)

    paths = {
        "email": "email",
        "phone": "phone",
        "cell": "cell",
        "first": "name.first",
        "street": "location.city",
    }
    frame = messages.limit(rows).select(
        field("value", F.lit("login.uuid")).alias("user_id"),
        field("value", F.lit("nat")).alias("nationality"),
        *(encrypt(field("value", F.lit(path))).alias(name) for name, path in paths.items()),
    )
    seconds = best_of(2, lambda: frame.write.format("noop").mode("overwrite").save())
    udf_rate = report.add("naive", "python UDF transformation", rows / seconds, "rows/s", "(row by row)")

    with cassandra_admin() as session, bench_table(session) as table:
        insert = session.prepare(
            f"INSERT INTO {table} (user_id, nationality, email_enc, phone_enc, cell_enc, full_name_enc,"  # noqa: S608
            " address_enc) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        collected = frame.collect()
        started = time.perf_counter()
        for row in collected:
            session.execute(insert, (uuid.UUID(row.user_id), row.nationality, *row[2:]))
        insert_rate = report.add(
            "naive", "one INSERT per row", len(collected) / (time.perf_counter() - started), "rows/s"
        )
    report.add("naive", "end to end", 1 / (1 / udf_rate + 1 / insert_rate), "rows/s", "(UDF, then inserts)")


# --- the pipeline -----------------------------------------------------------------------------------


def run_producer(count: int, seed: str, batch_size: int, requests_per_second: float) -> float:
    """The deployed bdf-producer, with the bench's seed, batch size and rate; seconds it took."""
    overrides = (
        f"BDF__PRODUCER__SEED={seed} BDF__PRODUCER__BATCH_SIZE={batch_size}"
        f" BDF__PRODUCER__MAX_REQUESTS_PER_SECOND={requests_per_second}"
    )
    seconds, out = timed_remote(
        PRODUCER_HOST,
        f"env {overrides} {VENV}/bin/bdf-producer --config /etc/bigdataflow/producer.toml"
        f" --count {count} --progress-interval 3600 2>&1 | tail -3",
    )
    failed = re.findall(r"failed=(\d+)", out)
    if not failed or int(failed[-1]):
        raise click.ClickException(f"bdf-producer did not deliver every profile: {out.strip()[-300:]}")
    return seconds


def produced_ids(count: int, seed: str, batch_size: int) -> list[uuid.UUID]:
    """The user ids the producer published: the offline source is reproducible per (seed, page)."""
    ids = []
    for page in range(1, -(-count // batch_size) + 1):
        size = min(batch_size, count - len(ids))
        ids += [uuid.UUID(user["login"]["uuid"]) for user in generate_users(size, seed, page)]
    return ids


def write_times(session: Any, ids: list[uuid.UUID], timeout: float) -> list[tuple[float, float]]:
    """(produced_at, written) in epoch seconds for each id, waiting until every one is stored."""
    from cassandra.concurrent import execute_concurrent_with_args

    query = session.prepare(f"SELECT produced_at, writetime(nationality) FROM {TABLE} WHERE user_id = ?")  # noqa: S608
    found: dict[uuid.UUID, tuple[float, float]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(ids):
        missing = [i for i in ids if i not in found]
        # A lookup that times out (Cassandra busy with the job's writes) is asked again.
        results = execute_concurrent_with_args(
            session, query, [(i,) for i in missing], concurrency=128, raise_on_first_error=False
        )
        for user_id, (ok, rows) in zip(missing, results, strict=True):
            row = rows.one() if ok else None
            if row is not None:
                found[user_id] = (row[0].replace(tzinfo=dt.UTC).timestamp(), row[1] / 1e6)
        if len(found) < len(ids):
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"{len(ids) - len(found)} sampled profiles not stored after {timeout:.0f} s"
                )
            time.sleep(2)
    return [found[i] for i in ids]


def latency_figures(report: Report, stage: str, times: list[tuple[float, float]]) -> None:
    latencies = [(written - produced) * 1000 for produced, written in times]
    for q in (50, 95, 99):
        report.add(stage, f"latency p{q}", percentile(latencies, q), "ms", "(CreateTime -> Cassandra write)")


def cgroup_usage() -> dict[str, dict[str, float]]:
    """CPU seconds used (the unit's cgroup) and peak RSS (bytes, summed over its processes) per unit."""
    usage = {}
    for host, units in SERVICES.items():
        for unit in units:
            # cgroup v2 hosts, or the hybrid layout of the lab's containers (no memory controller there)
            command = (
                f"g=$(systemctl show -p ControlGroup --value {unit});"
                " d=/sys/fs/cgroup$g; [ -f $d/cpu.stat ] || d=/sys/fs/cgroup/unified$g;"
                " grep usage_usec $d/cpu.stat;"
                " for p in $(cat $d/cgroup.procs); do grep VmHWM /proc/$p/status; done"
            )
            out = ssh(host, command).stdout
            cpu = re.search(r"usage_usec (\d+)", out)
            if cpu:
                peak_kib = sum(int(kib) for kib in re.findall(r"VmHWM:\s+(\d+) kB", out))
                cpu_seconds = int(cpu.group(1)) / 1e6
                usage[f"{host}/{unit}"] = {"cpu_seconds": cpu_seconds, "memory_peak": peak_kib * 1024}
    return usage


def drain(quiet_seconds: float = 20, timeout: float = 600) -> None:
    """Wait until the job has stored everything published: no new profile batch for a while.

    Asks the job's own batch records, not the profile table: a scan of the table grows
    with it (``max(stored_at)`` timed out once it held 190,000 rows).
    """
    client = stream_mongo_client()
    batches = client[AGGREGATES_DB][BATCHES_COLLECTION]

    def newest() -> Any:
        record = batches.find_one({"query": "profiles"}, sort=[("at", -1)], projection={"_id": 1})
        return record and record["_id"]

    try:
        deadline, last = time.monotonic() + timeout, newest()
        while time.monotonic() < deadline:
            time.sleep(quiet_seconds)
            latest = newest()
            if latest == last:
                return
            last = latest
        raise click.ClickException(f"the job still stored new batches after {timeout:.0f} s")
    finally:
        client.close()


def saturation(report: Report, session: Any, count: int, stamp: str) -> None:
    seed, batch = f"bench-saturation-{stamp}", 5000
    ids = produced_ids(count, seed, batch)
    before = cgroup_usage()
    seconds = run_producer(count, seed, batch, requests_per_second=1000)
    report.add("source", "bdf-producer at full speed", count / seconds, "profiles/s", f"(batches of {batch})")
    times = write_times(session, ids[:: max(1, count // 20000)], timeout=1800)
    after = cgroup_usage()
    written = sorted(w for _, w in times)
    low, high = percentile(written, 10), percentile(written, 90)
    steady = 0.8 * count / (high - low) if high > low else float("nan")
    report.add("saturation", "pipeline steady state", steady, "profiles/s", "(middle 80 % of write times)")
    report.add(
        "saturation", "pipeline overall", count / (written[-1] - min(p for p, _ in times)), "profiles/s"
    )
    latency_figures(report, "saturation", times)
    for name, used in after.items():
        cpu = used["cpu_seconds"] - before.get(name, used)["cpu_seconds"]
        report.add("cost", f"{name} CPU", cpu / count * 1e6, "CPU s per million profiles")
        report.add(
            "cost", f"{name} peak RSS", used["memory_peak"] / 2**20, "MiB", "(VmHWM of its processes, summed)"
        )
    disk_per_row(report)


def disk_per_row(report: Report) -> None:
    """On the first Cassandra node: one replica's bytes per stored profile."""
    remote(CASSANDRA_HOST, f"{NODETOOL} flush {KEYSPACE} {TABLE}")
    size = int(
        remote(CASSANDRA_HOST, f"du -sb /var/lib/cassandra/data/{KEYSPACE}/{TABLE}-*/ | cut -f1").split()[0]
    )
    # Cassandra's own estimate: a count(*) over the table timed out on the server at 200,000 rows.
    stats = remote(CASSANDRA_HOST, f"{NODETOOL} tablestats {KEYSPACE}.{TABLE}")
    rows = int(re.search(r"Number of partitions \(estimate\): (\d+)", stats).group(1))
    report.add(
        "cost",
        "cassandra disk per stored profile",
        size / rows,
        "bytes",
        f"({rows:,} rows as nodetool estimates them, LZ4, after flush)",
    )


def fixed_rate(report: Report, session: Any, rate: int, seconds: int, stamp: str) -> None:
    seed, count = f"bench-latency-{stamp}", rate * seconds
    ids = produced_ids(count, seed, rate)
    run_producer(count, seed, rate, requests_per_second=1)
    times = write_times(session, ids[:: max(1, count // 10000)], timeout=600)
    start = min(p for p, _ in times) + seconds * 0.1  # steady state: skip the first tenth
    steady = [t for t in times if t[0] >= start]
    latency_figures(report, f"{rate}/s", steady)


# --- the run ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, cwd=REPO, capture_output=True, text=True, check=False)  # noqa: S603
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 2**20, 1),
        "kernel": platform.release(),
        "commit": commit.stdout.strip(),
        "lab": f"systemd-nspawn machines {', '.join(HOSTS)} on this host ({INVENTORY_ARG})",
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--stage", "stages", type=click.Choice(STAGES), multiple=True, help="Run only these (repeatable)."
)
@click.option(
    "--saturation-profiles", default=100_000, show_default=True, help="Profiles in the saturation run."
)
@click.option("--rate", default=1000, show_default=True, help="Offered rate of the latency run (profiles/s).")
@click.option("--seconds", default=60, show_default=True, help="Length of the latency run.")
@click.option(
    "--limit-records", default=200_000, show_default=True, help="Messages / rows of the raw limits."
)
@click.option("--naive-rows", default=5000, show_default=True, help="Rows through the naive baseline.")
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO / "tests" / "bench" / "results",
    show_default=True,
    help="Where the JSON goes.",
)
def main(
    stages: tuple[str, ...],
    saturation_profiles: int,
    rate: int,
    seconds: int,
    limit_records: int,
    naive_rows: int,
    results: Path,
) -> None:
    """Benchmark the pipeline deployed on the lab (`make deploy INVENTORY=inventory/lab`; another
    lab with LAB_INVENTORY)."""
    stages = stages or STAGES
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Report()
    if "source" in stages:
        click.echo(f"== offline randomuser source over HTTP ({PRODUCER_HOST})", err=True)
        source_rate(report)
    if {"limits", "naive"} & set(stages):
        spark = spark_session()
        keys = lab_keys()
        messages = kafka_frame_of(spark, limit_records, stamp, keys)
        if "limits" in stages:
            click.echo("== raw limits", err=True)
            kafka_limits(report, limit_records, stamp)
            cassandra_limit(report, limit_records)
            transform_limit(report, limit_records, spark, messages, keys)
            ledger_limit(report, limit_records, messages, keys)
        if "naive" in stages:
            click.echo("== naive baseline", err=True)
            naive_baseline(report, spark, messages, naive_rows, keys)
        spark.stop()
    if {"saturation", "latency"} & set(stages):
        remote(PRODUCER_HOST, "systemctl stop bdf-producer")
        try:
            with cassandra_admin() as session:
                drain()
                if "saturation" in stages:
                    click.echo(f"== saturation: {saturation_profiles:,} profiles at full speed", err=True)
                    saturation(report, session, saturation_profiles, stamp)
                    drain()
                if "latency" in stages:
                    click.echo(f"== fixed rate: {rate}/s for {seconds} s", err=True)
                    fixed_rate(report, session, rate, seconds, stamp)
        finally:
            ssh(PRODUCER_HOST, "systemctl start bdf-producer")
    ratios(report)
    click.echo(report.table())
    results.mkdir(parents=True, exist_ok=True)
    target = results / f"{stamp}.json"
    target.write_text(
        json.dumps(
            {"started": stamp, "machine": machine(), "figures": [asdict(f) for f in report.figures]}, indent=1
        )
        + "\n"
    )
    click.echo(f"results: {target.relative_to(REPO) if target.is_relative_to(REPO) else target}", err=True)


def kafka_frame_of(spark: Any, rows: int, stamp: str, keys: Any) -> Any:
    """Sealed as the producer publishes them."""
    from tests.messages import kafka_frame

    users = [json.loads(message) for message in profile_messages(rows, f"bench-static-{stamp}")]
    return kafka_frame(spark, users, keys).repartition(2).cache()


def source_rate(report: Report) -> None:
    script = (
        "import time,requests;s=requests.Session();t=time.perf_counter();n=0\n"
        "for p in range(1,11): n+=len(s.get('http://127.0.0.1:8088/api/1.4/',params={'results':5000,'seed':'bench','page':p},timeout=120).json()['results'])\n"
        "print(n/(time.perf_counter()-t))"
    )
    out = remote(PRODUCER_HOST, f'{VENV}/bin/python -c "{script}"')
    report.add(
        "source", "offline randomuser over HTTP", float(out.split()[-1]), "profiles/s", "(results=5000)"
    )


def ratios(report: Report) -> None:
    steady = report.value("saturation", "pipeline steady state")
    limits = {f.metric: f.value for f in report.figures if f.stage == "limits"}
    naive = report.value("naive", "end to end")
    if steady and limits:
        slowest = min(limits, key=limits.get)
        report.add("ratio", f"pipeline / slowest raw limit ({slowest})", steady / limits[slowest], "x")
    if steady and naive:
        report.add("ratio", "pipeline / naive baseline", steady / naive, "x")


if __name__ == "__main__":
    main()
