#!/usr/bin/env bash
# kafka-configs.sh: runs org.apache.kafka.tools.ConfigCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.ConfigCommand "$@"
