# Sourced by bin/cassandra and bin/nodetool: locations, classpath and Java.
# Environment read (all optional): CASSANDRA_HOME, CASSANDRA_CONF, CASSANDRA_LOG_DIR,
# CASSANDRA_STORAGE_DIR, JAVA_HOME.
if [ -z "$CASSANDRA_HOME" ]; then
  CASSANDRA_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fi
CASSANDRA_CONF=${CASSANDRA_CONF:-$CASSANDRA_HOME/conf}
CASSANDRA_LOG_DIR=${CASSANDRA_LOG_DIR:-$CASSANDRA_HOME/logs}
CASSANDRA_STORAGE_DIR=${CASSANDRA_STORAGE_DIR:-$CASSANDRA_HOME/data}

# conf/ first: logback.xml and cassandra.yaml are looked up on the classpath too.
CLASSPATH="$CASSANDRA_CONF:$CASSANDRA_HOME/lib/*"

if [ -n "$JAVA_HOME" ]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=$(command -v java)
fi
if [ -z "$JAVA" ] || [ ! -x "$JAVA" ]; then
  echo "Java not found: install a Java 17 runtime or set JAVA_HOME" >&2
  exit 1
fi
JAVA_VERSION=$("$JAVA" -version 2>&1 | sed -E -n 's/.* version "([0-9]+).*/\1/p')
if [ "${JAVA_VERSION:-0}" -lt 11 ]; then
  echo "Cassandra 5.0 needs Java 11 or 17; $JAVA is Java ${JAVA_VERSION:-unknown}" >&2
  exit 1
fi

# Options files: one option per line, lines not starting with '-' ignored.
jvm_options_from() {
  local f
  for f in "$@"; do
    [ -r "$f" ] || continue
    grep -E '^-' "$f" | tr '\n' ' '
  done
}
