"""Structured logs: one JSON object per line, each with a stable event name. Secrets (tokens)
never reach a log line."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote_plus

SECRET_PARAMS = frozenset({"token"})  # browsers pass tail tokens in the query string
REDACTED = "[redacted]"

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

# The trace a line belongs to: bound around an attempt (its run's trace, tracing on or off), else
# asked of OpenTelemetry's current span while tracing is on (app.observability.tracing sets it).
_trace_id: ContextVar[str | None] = ContextVar("runlane_trace_id", default=None)
_trace_source: Callable[[], str | None] | None = None


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
        if "trace_id" not in entry:
            trace_id = _trace_id.get() or (_trace_source() if _trace_source else None)
            if trace_id:
                entry["trace_id"] = trace_id
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


@contextlib.contextmanager
def trace_id_bound(trace_id: str | None) -> Iterator[None]:
    """Log lines of this thread (and context) carry `trace_id` meanwhile."""
    token = _trace_id.set(trace_id)
    try:
        yield
    finally:
        _trace_id.reset(token)


def trace_ids_from(source: Callable[[], str | None] | None) -> None:
    """Where lines outside a bound trace find theirs (the current span's; None: nowhere)."""
    global _trace_source
    _trace_source = source


def redact_url(url: str) -> str:
    """`url` (a path with a query, a whole URL or a bare query string) with the value of every
    secret parameter replaced; the rest is kept as it came."""
    head, sep, query = url.partition("?") if "?" in url else ("", "", url)
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    pairs = query.split("&")
    for i, pair in enumerate(pairs):
        # decoded as the server decodes it: `%74oken=` is a token too
        if unquote_plus(pair.partition("=")[0]) in SECRET_PARAMS:
            pairs[i] = f"{pair.partition('=')[0]}={REDACTED}"
    return head + sep + "&".join(pairs) + fragment


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
