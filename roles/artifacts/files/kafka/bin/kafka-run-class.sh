#!/usr/bin/env bash
# Runs a Kafka main class with the distribution's libs/ on the classpath.
# Same interface as the upstream script of the same name:
#   kafka-run-class.sh [-daemon] [-name servicename] [-loggc] classname [opts]
# Environment read (all optional): JAVA_HOME, KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_GC_LOG_OPTS, KAFKA_JMX_OPTS, JMX_PORT, KAFKA_LOG4J_OPTS, LOG_DIR, KAFKA_OPTS,
# KAFKA_DEBUG (+ JAVA_DEBUG_PORT, DEBUG_SUSPEND_FLAG), CLASSPATH (prepended).
set -o pipefail

if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
fi

base_dir=$(cd "$(dirname "$0")/.." && pwd)

# Classpath: every jar shipped in libs/ (test/source jars are never shipped).
CLASSPATH="${CLASSPATH:+$CLASSPATH:}$base_dir/libs/*"

if [ -z "$KAFKA_JMX_OPTS" ]; then
  KAFKA_JMX_OPTS="-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
fi
if [ -n "$JMX_PORT" ]; then
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT"
  if [ -z "$KAFKA_JMX_HOSTNAME" ]; then
    KAFKA_JMX_HOSTNAME=127.0.0.1
  fi
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Djava.rmi.server.hostname=$KAFKA_JMX_HOSTNAME"
fi

LOG_DIR=${LOG_DIR:-$base_dir/logs}

if [ -z "$KAFKA_LOG4J_OPTS" ]; then
  # A command-line tool: log to the console only.
  KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml"
else
  mkdir -p "$LOG_DIR"
fi
KAFKA_LOG4J_OPTS="-Dkafka.logs.dir=$LOG_DIR $KAFKA_LOG4J_OPTS"

if [ -n "$KAFKA_DEBUG" ]; then
  JAVA_DEBUG_PORT=${JAVA_DEBUG_PORT:-5005}
  JAVA_DEBUG_OPTS=${JAVA_DEBUG_OPTS:-"-agentlib:jdwp=transport=dt_socket,server=y,suspend=${DEBUG_SUSPEND_FLAG:-n},address=$JAVA_DEBUG_PORT"}
  KAFKA_OPTS="$JAVA_DEBUG_OPTS $KAFKA_OPTS"
fi

if [ -n "$JAVA_HOME" ]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:-"-Xmx256M"}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:-"-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"}

DAEMON_MODE=false
GC_LOG_ENABLED=false
DAEMON_NAME=kafka
while [ $# -gt 0 ]; do
  case "$1" in
    -name) DAEMON_NAME=$2; shift 2 ;;
    -loggc) [ -z "$KAFKA_GC_LOG_OPTS" ] && GC_LOG_ENABLED=true; shift ;;
    -daemon) DAEMON_MODE=true; shift ;;
    *) break ;;
  esac
done
CONSOLE_OUTPUT_FILE=$LOG_DIR/$DAEMON_NAME.out

if [ "$GC_LOG_ENABLED" = true ]; then
  mkdir -p "$LOG_DIR"
  KAFKA_GC_LOG_OPTS="-Xlog:gc*:file=$LOG_DIR/$DAEMON_NAME-gc.log:time,tags:filecount=10,filesize=100M"
fi

# Word splitting of the *_OPTS variables is intended (they hold several options).
# shellcheck disable=SC2086
if [ "$DAEMON_MODE" = true ]; then
  mkdir -p "$LOG_DIR"
  nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_OPTS -cp "$CLASSPATH" $KAFKA_OPTS "$@" > "$CONSOLE_OUTPUT_FILE" 2>&1 < /dev/null &
else
  exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_OPTS -cp "$CLASSPATH" $KAFKA_OPTS "$@"
fi
