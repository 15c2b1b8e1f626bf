#!/usr/bin/env bash
# kafka-acls.sh: runs org.apache.kafka.tools.AclCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.AclCommand "$@"
