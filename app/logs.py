"""Structured logs: one JSON object per line, each with a stable event name."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO") -> None:
    """Called by each entry point once; libraries only ever get loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def get(name: str) -> logging.Logger:
    return logging.getLogger(name)


class Outage:
    """A dependency that went away, logged once when it goes (`<event>_unavailable`) and once
    when it is back (`<event>_back`, with how long it was down), not at every retry between."""

    def __init__(self, logger: logging.Logger, event: str) -> None:
        self.logger = logger
        self.event = event
        self.since: float | None = None

    def down(self, exc: Exception) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning(f"{self.event}_unavailable", extra={"error": str(exc)})

    def up(self) -> None:
        if self.since is not None:
            down_s = round(time.monotonic() - self.since, 1)
            self.logger.info(f"{self.event}_back", extra={"down_s": down_s})
            self.since = None
