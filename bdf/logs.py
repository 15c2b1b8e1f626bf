"""One structured log format for every BigDataFlow program: a JSON object per line.

Messages carry counts, ids and reasons, never personal data: callers pass facts as
``extra={"fields": {...}}`` and they become top-level keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr (journald collects it under systemd) in UTC."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # py4j logs every JVM call at DEBUG/INFO: noise, and it may echo arguments.
    logging.getLogger("py4j").setLevel(logging.WARNING)
