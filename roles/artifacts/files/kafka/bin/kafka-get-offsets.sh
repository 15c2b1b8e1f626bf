#!/usr/bin/env bash
# kafka-get-offsets.sh: runs org.apache.kafka.tools.GetOffsetShell (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.GetOffsetShell "$@"
