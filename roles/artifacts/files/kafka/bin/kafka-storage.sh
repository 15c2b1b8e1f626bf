#!/usr/bin/env bash
# kafka-storage.sh: runs kafka.tools.StorageTool (see --help).
exec "$(dirname "$0")/kafka-run-class.sh" kafka.tools.StorageTool "$@"
