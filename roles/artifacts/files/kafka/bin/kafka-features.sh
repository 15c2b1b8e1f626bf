#!/usr/bin/env bash
# kafka-features.sh: runs org.apache.kafka.tools.FeatureCommand (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.FeatureCommand "$@"
