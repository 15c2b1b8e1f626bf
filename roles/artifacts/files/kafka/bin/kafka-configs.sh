#!/usr/bin/env bash
# kafka-configs.sh: runs ConfigCommand (see --help). It moved from the broker's jar
# (kafka.admin, up to 4.3) to kafka-tools in 4.4: the script serves either release, so
# that an upgrade's first deploy can still run on the older one.
libs="$(dirname "$0")/../libs"
main=org.apache.kafka.tools.ConfigCommand
compgen -G "$libs/kafka-tools-4.[0-3].*.jar" >/dev/null && main=kafka.admin.ConfigCommand
exec "$(dirname "$0")/kafka-run-class.sh" "$main" "$@"
