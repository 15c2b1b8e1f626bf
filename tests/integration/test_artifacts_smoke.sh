#!/usr/bin/env bash
# Smoke test of the prepared artifacts (not of the roles): each server is unpacked
# into a temporary folder, started on 127.0.0.1 with the security the project uses,
# exercised with a real client, and stopped.
#
#   tests/integration/test_artifacts_smoke.sh [wheelhouse] [kafka] [ferretdb] [cassandra]
#
# With no argument every part is tested, in that order: the wheelhouse part builds a
# venv whose pyspark (with the Spark connector jars) then reads from Kafka and
# Cassandra, and whose cqlsh queries Cassandra (SMOKE_NO_SPARK=1 skips the Spark reads).
# Needs the cache prepared by `ansible-playbook playbooks/artifacts.yml` (ARTIFACTS_DIR,
# default .artifacts/ in the repository), Java 17, and python3 with pymongo and
# cassandra-driver (the project's dev environment). Every artifact is checked against manifest.json before use.
# Prints the time and peak memory (VmHWM of the server process) of each part, and ends
# with "N passed, N failed".
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ARTIFACTS_DIR=${ARTIFACTS_DIR:-$REPO/.artifacts}
MANIFEST=$ARTIFACTS_DIR/manifest.json
PYTHON=${PYTHON:-python3}
KAFKA_SMOKE_HEAP=${KAFKA_SMOKE_HEAP:-"-Xms256m -Xmx512m"}
# Cassandra's heap (bin/cassandra's MAX_HEAP_SIZE / MIN_HEAP_SIZE).
CASSANDRA_SMOKE_MAX_HEAP=${CASSANDRA_SMOKE_MAX_HEAP:-1G}
CASSANDRA_SMOKE_MIN_HEAP=${CASSANDRA_SMOKE_MIN_HEAP:-512M}
START_TIMEOUT=${START_TIMEOUT:-180}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bdf-artifacts-smoke.XXXXXX")
PIDS=()
PASSED=0
FAILED=0
SUMMARY=()

log() { printf '[smoke %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [ -z "${KEEP_WORK:-}" ]; then
    rm -rf "$WORK"
  else
    log "work folder kept: $WORK"
  fi
}
trap cleanup EXIT

# Stops one process this script started (by its pid only): TERM, then KILL after 30 s.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "pid $pid did not stop after TERM; killing it"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port timeout pid
  local port=$1 timeout=$2 pid=$3
  for _ in $(seq 1 "$timeout"); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "process $pid exited before port $port opened"
      return 1
    fi
    if "$PYTHON" -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
      return 0
    fi
    sleep 1
  done
  log "port $port not open after ${timeout}s"
  return 1
}

peak_rss_mib() { # pid
  awk '/^VmHWM:/ {printf "%d", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"
}

# Path of an artifact from the manifest, after checking its SHA-256.
artifact() { # name
  "$PYTHON" - "$MANIFEST" "$ARTIFACTS_DIR" "$1" <<'EOF'
import hashlib, json, sys
from pathlib import Path
manifest, cache, name = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]
item = manifest["artifacts"].get(name)
if item is None:
    sys.exit(f"{name} is not in {sys.argv[1]}: run ansible-playbook playbooks/artifacts.yml")
path = cache / item["path"]
if item["kind"] == "file":
    checks = {path: item["sha256"]}
else:
    checks = {path / f: v["sha256"] for f, v in item["files"].items()}
for p, want in checks.items():
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        sys.exit(f"{p}: SHA-256 {h.hexdigest()} is not the manifest's {want}")
print(path)
EOF
}

# ------------------------------------------------------------------------------------
# Spark connectors: pyspark (from the wheelhouse venv when the wheelhouse part ran,
# else $PYTHON's) reads the running Kafka / Cassandra through the connector jars only.
# ------------------------------------------------------------------------------------
spark_python() {
  if [ -x "$WORK/venv/bin/python" ]; then
    echo "$WORK/venv/bin/python"
  elif "$PYTHON" -c 'import pyspark' 2>/dev/null; then
    echo "$PYTHON"
  else
    return 1
  fi
}

spark_read() { # kafka PORT USER PASSWORD TOPIC EXPECTED | cassandra PORT USER PASSWORD
  local py jars_dir jars
  if [ -n "${SMOKE_NO_SPARK:-}" ]; then
    log "spark: check skipped (SMOKE_NO_SPARK set)"; return 0
  fi
  py=$(spark_python) || { log "spark: FAIL no pyspark (run the wheelhouse part or install pyspark)"; return 1; }
  jars_dir=$(artifact spark_connectors) || return 1
  jars=$(find "$jars_dir" -name '*.jar' | sort | paste -sd, -)
  log "spark: pyspark reads $1 through the connector jars only"
  PYSPARK_SUBMIT_ARGS="--driver-memory 512m pyspark-shell" "$py" - "$jars" "$@" > "$WORK/spark-$1.log" 2>&1 <<'EOF' \
    || { tail -40 "$WORK/spark-$1.log" >&2; return 1; }
import sys

from pyspark.sql import SparkSession

jars, mode, port, user, password = sys.argv[1:6]
spark = (
    SparkSession.builder.master("local[1]")
    .appName("bdf-artifacts-smoke")
    .config("spark.jars", jars)
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.shuffle.partitions", "1")
    .getOrCreate()
)
if mode == "kafka":
    topic, expected = sys.argv[6:8]
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )
    df = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", f"127.0.0.1:{port}")
        .option("kafka.security.protocol", "SASL_PLAINTEXT")
        .option("kafka.sasl.mechanism", "SCRAM-SHA-512")
        .option("kafka.sasl.jaas.config", jaas)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
    values = [bytes(r.value).decode() for r in df.select("value").collect()]
    assert values == [expected], values
else:
    df = (
        spark.read.format("org.apache.spark.sql.cassandra")
        .option("spark.cassandra.connection.host", "127.0.0.1")
        .option("spark.cassandra.connection.port", port)
        .option("spark.cassandra.auth.username", user)
        .option("spark.cassandra.auth.password", password)
        .options(keyspace="bdf", table="profiles")
        .load()
    )
    rows = [(r.nat, bytes(r.name_enc)) for r in df.select("nat", "name_enc").collect()]
    assert rows == [("FR", b"\xca\xfe")], rows
print(f"spark {spark.version}: read {mode} ok")
spark.stop()
EOF
  tail -1 "$WORK/spark-$1.log" >&2
}

# ------------------------------------------------------------------------------------
# Wheelhouse: a fresh venv installs every requirement from it alone (no index).
# ------------------------------------------------------------------------------------
smoke_wheelhouse() {
  local wh
  wh=$(artifact wheelhouse) || return 1
  log "wheelhouse: installing $wh/requirements.txt into a new venv with --no-index"
  "$PYTHON" -m venv "$WORK/venv" || return 1
  "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$wh" \
    -r "$wh/requirements.txt" || return 1
  "$WORK/venv/bin/python" - <<'EOF' || return 1
import importlib
import sys

import pyspark

for mod in ["confluent_kafka", "cassandra.cluster", "pymongo", "cryptography", "click", "pydantic",
            "requests", "faker", "orjson", "dash", "yaml", "py4j"]:
    importlib.import_module(mod)
assert pyspark.__version__ == "3.5.7", pyspark.__version__
print(f"wheelhouse: all runtime modules import; pyspark {pyspark.__version__}", file=sys.stderr)
EOF
  HOME="$WORK" "$WORK/venv/bin/cqlsh" --version >&2 || return 1
  MEM="venv $(du -sm "$WORK/venv" | cut -f1) MiB"
}

# ------------------------------------------------------------------------------------
# Kafka: KRaft combined node, SASL_PLAINTEXT SCRAM-SHA-512 listener, StandardAuthorizer.
# ------------------------------------------------------------------------------------
smoke_kafka() {
  local tgz dir bport cport pid admin_pw app_pw out
  tgz=$(artifact kafka) || return 1
  mkdir -p "$WORK/kafka" && tar -xzf "$tgz" -C "$WORK/kafka" || return 1
  dir=$(find "$WORK/kafka" -mindepth 1 -maxdepth 1 -type d -name 'kafka_*')
  bport=$(free_port); cport=$(free_port)
  admin_pw="admin-$RANDOM$RANDOM"; app_pw="app-$RANDOM$RANDOM"
  local ctl_pw="controller-$RANDOM$RANDOM"

  cat > "$dir/config/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=BROKER://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=BROKER://127.0.0.1:$bport
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=BROKER
controller.listener.names=CONTROLLER
# Clients and the broker itself: SCRAM-SHA-512 (credentials live in the metadata log).
listener.name.broker.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.broker.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
# Controller quorum: SCRAM cannot authenticate it (its credentials are in the log it
# serves), so it uses PLAIN with a static user.
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$ctl_pw" user_controller="$ctl_pw";
sasl.mechanism.controller.protocol=PLAIN
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
log.dirs=$WORK/kafka/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  local client
  for client in admin app; do
    local pw=$admin_pw
    [ "$client" = app ] && pw=$app_pw
    cat > "$WORK/kafka/$client.properties" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$client" password="$pw";
EOF
  done

  log "kafka: formatting KRaft storage with SCRAM credentials for admin and app"
  local cluster_id
  cluster_id=$("$dir/bin/kafka-storage.sh" random-uuid) || return 1
  "$dir/bin/kafka-storage.sh" format -t "$cluster_id" -c "$dir/config/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]" \
    --add-scram "SCRAM-SHA-512=[name=app,password=$app_pw]" > "$WORK/kafka/format.log" 2>&1 \
    || { cat "$WORK/kafka/format.log" >&2; return 1; }

  log "kafka: starting the broker on 127.0.0.1:$bport (controller :$cport)"
  LOG_DIR="$WORK/kafka/logs" KAFKA_HEAP_OPTS="$KAFKA_SMOKE_HEAP" \
    "$dir/bin/kafka-server-start.sh" "$dir/config/server.properties" > "$WORK/kafka/server.out" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$bport" "$START_TIMEOUT" "$pid" || { tail -30 "$WORK/kafka/server.out" >&2; return 1; }

  local admin=(--bootstrap-server "127.0.0.1:$bport" --command-config "$WORK/kafka/admin.properties")
  local app=(--bootstrap-server "127.0.0.1:$bport" --command-config "$WORK/kafka/app.properties")

  log "kafka: creating topic user_profiles as admin"
  "$dir/bin/kafka-topics.sh" "${admin[@]}" --create --topic user_profiles --partitions 3 --replication-factor 1 \
    || return 1

  log "kafka: app must not see the topic before it has an ACL"
  out=$("$dir/bin/kafka-topics.sh" "${app[@]}" --list 2>&1) || return 1
  if grep -q user_profiles <<< "$out"; then
    log "kafka: FAIL app sees user_profiles without an ACL: $out"; return 1
  fi

  log "kafka: granting app Write+Describe on user_profiles with kafka-acls.sh"
  "$dir/bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal User:app \
    --operation Write --operation Describe --topic user_profiles > /dev/null || return 1
  out=$("$dir/bin/kafka-acls.sh" "${admin[@]}" --list --topic user_profiles) || return 1
  printf '    %s\n' "$out" >&2
  if ! grep -q "principal=User:app.*operation=WRITE" <<< "$out"; then
    log "kafka: FAIL the ACL is not listed"; return 1
  fi

  out=$("$dir/bin/kafka-topics.sh" "${app[@]}" --list 2>&1) || return 1
  grep -qx user_profiles <<< "$out" || { log "kafka: FAIL app does not see the topic after the ACL: $out"; return 1; }

  log "kafka: app produces one message, admin consumes it"
  echo "smoke-$cluster_id" | "$dir/bin/kafka-console-producer.sh" --bootstrap-server "127.0.0.1:$bport" \
    --command-config "$WORK/kafka/app.properties" --topic user_profiles || return 1
  out=$("$dir/bin/kafka-console-consumer.sh" --bootstrap-server "127.0.0.1:$bport" \
    --command-config "$WORK/kafka/admin.properties" --topic user_profiles --from-beginning \
    --max-messages 1 --timeout-ms 60000 2>/dev/null)
  [ "$out" = "smoke-$cluster_id" ] || { log "kafka: FAIL consumed '$out'"; return 1; }

  spark_read kafka "$bport" admin "$admin_pw" user_profiles "smoke-$cluster_id" || return 1

  log "kafka: a wrong password is refused"
  sed "s/password=\"$app_pw\"/password=\"wrong\"/" "$WORK/kafka/app.properties" > "$WORK/kafka/bad.properties"
  if "$dir/bin/kafka-topics.sh" --bootstrap-server "127.0.0.1:$bport" --command-config "$WORK/kafka/bad.properties" \
    --list > "$WORK/kafka/bad.out" 2>&1; then
    log "kafka: FAIL a wrong password was accepted"; return 1
  fi
  grep -q "SaslAuthenticationException\|Authentication failed" "$WORK/kafka/bad.out" \
    || { log "kafka: FAIL unexpected error for a wrong password"; cat "$WORK/kafka/bad.out" >&2; return 1; }

  "$dir/bin/kafka-metadata-quorum.sh" "${admin[@]}" describe --status > "$WORK/kafka/quorum.out" 2>&1 \
    || { cat "$WORK/kafka/quorum.out" >&2; return 1; }

  # The log4j2 binding works: the broker wrote its own log file.
  grep -q "Kafka Server started" "$WORK/kafka/logs/server.log" \
    || { log "kafka: FAIL no 'Kafka Server started' in logs/server.log (log4j2 setup)"; return 1; }

  MEM="$(peak_rss_mib "$pid") MiB peak RSS (heap $KAFKA_SMOKE_HEAP)"
  stop_pid "$pid"
}

# ------------------------------------------------------------------------------------
# FerretDB: SQLite backend, new authentication (SCRAM-SHA-256), pymongo.
# ------------------------------------------------------------------------------------
smoke_ferretdb() {
  local bin port pid pw
  bin=$(artifact ferretdb) || return 1
  mkdir -p "$WORK/ferretdb/data"
  port=$(free_port)
  pw="admin-$RANDOM$RANDOM"
  log "ferretdb: starting on 127.0.0.1:$port (sqlite, new auth, telemetry off)"
  FERRETDB_SETUP_PASSWORD=$pw "$bin" --handler=sqlite --sqlite-url="file:$WORK/ferretdb/data/" \
    --listen-addr="127.0.0.1:$port" --debug-addr=- --telemetry=disable --state-dir="$WORK/ferretdb" \
    --test-enable-new-auth --setup-database=admin --setup-username=admin \
    > "$WORK/ferretdb/server.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$port" 60 "$pid" || { tail -20 "$WORK/ferretdb/server.log" >&2; return 1; }

  "$PYTHON" - "$port" "$pw" <<'EOF' || return 1
import sys
import pymongo
from pymongo.errors import OperationFailure

port, pw = int(sys.argv[1]), sys.argv[2]
uri = f"mongodb://127.0.0.1:{port}/"
anon = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
try:
    anon.bdf.smoke.insert_one({"x": 1})
    sys.exit("anonymous insert was accepted")
except OperationFailure as exc:
    assert exc.code == 13, exc  # Unauthorized

admin = pymongo.MongoClient(uri, username="admin", password=pw, authSource="admin",
                            authMechanism="SCRAM-SHA-256", serverSelectionTimeoutMS=5000)
admin.bdf.command("createUser", "app", pwd="app-" + pw, roles=[], mechanisms=["SCRAM-SHA-256"])
app = pymongo.MongoClient(uri, username="app", password="app-" + pw, authSource="bdf",
                          authMechanism="SCRAM-SHA-256", serverSelectionTimeoutMS=5000)
app.bdf.nationality_counts.replace_one({"_id": "FR"}, {"_id": "FR", "count": 3}, upsert=True)
app.bdf.nationality_counts.replace_one({"_id": "FR"}, {"_id": "FR", "count": 3}, upsert=True)
docs = list(app.bdf.nationality_counts.find({}))
assert docs == [{"_id": "FR", "count": 3}], docs
bad = pymongo.MongoClient(uri, username="app", password="wrong", authSource="bdf",
                          authMechanism="SCRAM-SHA-256", serverSelectionTimeoutMS=5000)
try:
    bad.bdf.nationality_counts.find_one()
    sys.exit("a wrong password was accepted")
except OperationFailure as exc:
    assert exc.code == 18, exc  # AuthenticationFailed
print("ferretdb: anonymous refused, SCRAM-SHA-256 admin and app users work, upsert+find ok", file=sys.stderr)
EOF
  MEM="$(peak_rss_mib "$pid") MiB peak RSS"
  stop_pid "$pid"
}

# ------------------------------------------------------------------------------------
# Cassandra: one node on 127.0.0.1, PasswordAuthenticator, small heap, python driver.
# ------------------------------------------------------------------------------------
smoke_cassandra() {
  local tgz dir cql storage jmx pid
  tgz=$(artifact cassandra) || return 1
  mkdir -p "$WORK/cassandra" && tar -xzf "$tgz" -C "$WORK/cassandra" || return 1
  dir=$(find "$WORK/cassandra" -mindepth 1 -maxdepth 1 -type d -name 'apache-cassandra-*')
  cql=$(free_port); storage=$(free_port); jmx=$(free_port)
  sed -i -e "s/^native_transport_port: .*/native_transport_port: $cql/" \
    -e "s/^storage_port: .*/storage_port: $storage/" \
    -e "s/\"127.0.0.1:7000\"/\"127.0.0.1:$storage\"/" "$dir/conf/cassandra.yaml"

  log "cassandra: starting on 127.0.0.1:$cql (heap $CASSANDRA_SMOKE_MIN_HEAP..$CASSANDRA_SMOKE_MAX_HEAP)"
  # Test-only start-up shortcuts: no 30 s ring delay before token allocation, no wait
  # for gossip to settle, default superuser created at once.
  MAX_HEAP_SIZE=$CASSANDRA_SMOKE_MAX_HEAP MIN_HEAP_SIZE=$CASSANDRA_SMOKE_MIN_HEAP JMX_PORT=$jmx \
    CASSANDRA_STORAGE_DIR="$WORK/cassandra/data" CASSANDRA_LOG_DIR="$WORK/cassandra/logs" \
    JVM_EXTRA_OPTS="-Dcassandra.ring_delay_ms=1000 -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.superuser_setup_delay_ms=0" \
    "$dir/bin/cassandra" -f -R > "$WORK/cassandra/server.out" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$cql" "$START_TIMEOUT" "$pid" || { tail -30 "$WORK/cassandra/server.out" >&2; return 1; }

  "$PYTHON" - "$cql" <<'EOF' || return 1
import sys
import time

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable

port = int(sys.argv[1])
try:
    Cluster(["127.0.0.1"], port=port, connect_timeout=10).connect()
    sys.exit("an anonymous CQL session was accepted")
except NoHostAvailable as exc:
    assert "AuthenticationFailed" in repr(exc) or "requires authentication" in repr(exc), exc

deadline = time.monotonic() + 60
while True:  # the default superuser appears just after the port opens
    try:
        cluster = Cluster(["127.0.0.1"], port=port, auth_provider=PlainTextAuthProvider("cassandra", "cassandra"))
        session = cluster.connect()
        break
    except NoHostAvailable:
        if time.monotonic() > deadline:
            raise
        time.sleep(2)
version = session.execute("SELECT release_version FROM system.local").one().release_version
session.execute("CREATE ROLE bdf_app WITH PASSWORD = 'app-pw-smoke' AND LOGIN = true")
session.execute("CREATE KEYSPACE bdf WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}")
session.execute("CREATE TABLE bdf.profiles (user_id uuid PRIMARY KEY, nat text, name_enc blob)")
session.execute("GRANT MODIFY ON KEYSPACE bdf TO bdf_app")
session.execute("GRANT SELECT ON KEYSPACE bdf TO bdf_app")
cluster.shutdown()

app = Cluster(["127.0.0.1"], port=port, auth_provider=PlainTextAuthProvider("bdf_app", "app-pw-smoke"))
s = app.connect("bdf")
s.execute("INSERT INTO profiles (user_id, nat, name_enc) VALUES (uuid(), 'FR', 0xcafe)")
rows = list(s.execute("SELECT nat, name_enc FROM profiles"))
assert [(r.nat, r.name_enc) for r in rows] == [("FR", b"\xca\xfe")], rows
try:
    s.execute("DROP TABLE profiles")
    sys.exit("bdf_app could drop a table without the DROP permission")
except Exception as exc:  # Unauthorized
    assert "Unauthorized" in type(exc).__name__ or "permission" in str(exc), exc
app.shutdown()
print(f"cassandra {version}: anonymous refused, role with MODIFY/SELECT writes and reads, DROP refused",
      file=sys.stderr)
EOF
  if [ -x "$WORK/venv/bin/cqlsh" ]; then
    log "cassandra: cqlsh from the wheelhouse queries the node"
    HOME="$WORK" "$WORK/venv/bin/cqlsh" -u cassandra -p cassandra 127.0.0.1 "$cql" \
      -e "SELECT nat FROM bdf.profiles" > "$WORK/cassandra/cqlsh.out" 2>&1 \
      || { cat "$WORK/cassandra/cqlsh.out" >&2; return 1; }
    grep -q " FR" "$WORK/cassandra/cqlsh.out" || { cat "$WORK/cassandra/cqlsh.out" >&2; return 1; }
  fi
  spark_read cassandra "$cql" bdf_app app-pw-smoke || return 1

  JMX_PORT=$jmx "$dir/bin/nodetool" status > "$WORK/cassandra/nodetool.out" 2>&1 \
    || { cat "$WORK/cassandra/nodetool.out" >&2; return 1; }
  grep -q "^UN  127.0.0.1" "$WORK/cassandra/nodetool.out" \
    || { log "cassandra: FAIL nodetool status does not show the node Up/Normal"; cat "$WORK/cassandra/nodetool.out" >&2; return 1; }

  MEM="$(peak_rss_mib "$pid") MiB peak RSS (heap $CASSANDRA_SMOKE_MIN_HEAP..$CASSANDRA_SMOKE_MAX_HEAP)"
  stop_pid "$pid"
}

run() { # component
  local name=$1 start rc
  MEM="-"
  start=$(date +%s.%N)
  log "=== $name"
  "smoke_$name"
  rc=$?
  local secs
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1)); SUMMARY+=("PASS $name  ${secs}s  $MEM")
  else
    FAILED=$((FAILED + 1)); SUMMARY+=("FAIL $name  ${secs}s")
  fi
}

main() {
  local components=("$@")
  [ ${#components[@]} -eq 0 ] && components=(wheelhouse kafka ferretdb cassandra)
  if [ ! -f "$MANIFEST" ]; then
    echo "no $MANIFEST: run ansible-playbook playbooks/artifacts.yml first" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  local c
  for c in "${components[@]}"; do
    if ! declare -F "smoke_$c" > /dev/null; then
      echo "unknown part '$c' (wheelhouse, kafka, ferretdb, cassandra)" >&2
      exit 2
    fi
    run "$c"
  done
  printf '%s\n' "${SUMMARY[@]}"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

main "$@"
