#!/usr/bin/env bash
# kafka-consumer-groups.sh: runs org.apache.kafka.tools.consumer.group.ConsumerGroupCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
