#!/usr/bin/env bash
# kafka-cluster.sh: runs org.apache.kafka.tools.ClusterTool (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.ClusterTool "$@"
