#!/usr/bin/env bash
# kafka-producer-perf-test.sh: runs org.apache.kafka.tools.ProducerPerformance (see --help).
if [ -z "$KAFKA_HEAP_OPTS" ]; then
  export KAFKA_HEAP_OPTS="-Xmx512M"
fi
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.ProducerPerformance "$@"
