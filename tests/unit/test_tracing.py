"""Tracing without servers: when it is on, which traceparents are valid, and the trace id in
log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app import logs
from app.config import ConfigError, Settings
from app.observability import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def settings_of(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"RUNLANE_API_TOKENS": "a:t", "RUNLANE_HOME": str(tmp_path), **env})


def test_tracing_is_off_by_default_and_setup_does_nothing(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)

    assert not settings.tracing
    assert not tracing.setup(settings, "runlane-web")
    assert not tracing.enabled()
    assert tracing.current_traceparent() is None


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ],
)
def test_what_turns_tracing_on(tmp_path: Path, env: dict[str, str], on: bool) -> None:
    assert settings_of(tmp_path, **env).tracing is on


def test_an_unknown_traces_exporter_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER must be one of otlp"):
        settings_of(tmp_path, OTEL_TRACES_EXPORTER="jaeger")


@pytest.mark.parametrize(
    ("header", "stored"),
    [
        (VALID, VALID),
        (f" {VALID} ", VALID),  # optional whitespace around a header value
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),
        # a later version: read as 00, its extra fields dropped
        (f"01-{TRACE_ID}-00f067aa0ba902b7-01-what-next", VALID),
        (None, None),
        ("", None),
        ("garbage", None),
        (f"00-{TRACE_ID}-00f067aa0ba902b7", None),
        (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", None),
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-01-x", None),
        (f"01-{TRACE_ID}-00f067aa0ba902b7-01-", None),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-0g", None),
        (VALID + " " * 600, None),  # refused unread
    ],
)
def test_parse_traceparent(header: str | None, stored: str | None) -> None:
    assert tracing.parse_traceparent(header) == stored


def test_trace_id_of() -> None:
    assert tracing.trace_id_of(VALID) == TRACE_ID
    assert tracing.trace_id_of(None) is None


def record(message: str, **extra: object) -> logging.LogRecord:
    found = logging.LogRecord("runlane.test", logging.INFO, __file__, 1, message, None, None)
    found.__dict__.update(extra)
    return found


def test_log_lines_carry_the_bound_trace_id_and_only_then() -> None:
    formatter = logs.JsonFormatter()

    with logs.trace_id_bound(TRACE_ID):
        inside = json.loads(formatter.format(record("attempt.error")))
    outside = json.loads(formatter.format(record("attempt.error")))

    assert inside["trace_id"] == TRACE_ID
    assert "trace_id" not in outside


def test_log_lines_ask_the_trace_source_when_none_is_bound() -> None:
    formatter = logs.JsonFormatter()
    logs.trace_ids_from(lambda: TRACE_ID)
    try:
        line = json.loads(formatter.format(record("submit.redis_failed")))
        given = json.loads(formatter.format(record("x", trace_id="given")))
    finally:
        logs.trace_ids_from(None)

    assert line["trace_id"] == TRACE_ID
    assert given["trace_id"] == "given"  # a line's own trace_id wins
