#!/usr/bin/env bash
# kafka-log-dirs.sh: runs org.apache.kafka.tools.LogDirsCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.LogDirsCommand "$@"
