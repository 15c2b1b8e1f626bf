#!/usr/bin/env bash
# kafka-broker-api-versions.sh: runs org.apache.kafka.tools.BrokerApiVersionsCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
