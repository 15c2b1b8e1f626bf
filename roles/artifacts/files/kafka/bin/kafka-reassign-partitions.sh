#!/usr/bin/env bash
# kafka-reassign-partitions.sh: runs org.apache.kafka.tools.reassign.ReassignPartitionsCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.reassign.ReassignPartitionsCommand "$@"
