"""How the CLI shows things to people: colour, durations (both ways), relative times, tables,
key/value blocks and a live run tail. Pure functions, apart from render_tail's writing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from app.config import ClientSettings

TERMINAL = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
BAR_WIDTH = 30
UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_CODES = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
    "dim": "2",
    "bold": "1",
}
STATUS_COLOURS = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
    "running": "cyan",
    "queued": "yellow",
    "delayed": "blue",
    "waiting": "blue",
}


# --- colour -------------------------------------------------------------------------------------


class Style:
    """ANSI colour, on only when asked for (a terminal, no NO_COLOR, not TERM=dumb)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO, env: Mapping[str, str] | None = None) -> Style:
        return cls(ClientSettings.from_env(env).colour and _isatty(stream))

    def paint(self, text: str, colour: str | None) -> str:
        if not self.enabled or not colour or not text:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    def status(self, text: str) -> str:
        return self.paint(text, STATUS_COLOURS.get(text.strip()))


PLAIN = Style(False)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # a closed stream
        return False


# --- durations and times ------------------------------------------------------------------------


def parse_duration(text: str, plain: str = "ms") -> float:
    """Seconds in `30s`, `5m`, `1h30m`, `1500ms` or `1.5s`; a plain number is in unit `plain`."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * UNITS_S[plain]
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 5m, 1500ms, 1h30m)")
    return sum(float(number) * UNITS_S[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """`350ms`, `4.2s`, `3m 20s`, `2h 5m`, `3d 4h`: two units at most, zero parts left out."""
    if seconds < 0.9995:
        return f"{round(seconds * 1000)}ms"
    if seconds < 59.95:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    days, rest = divmod(round(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next(i for i, (count, _) in enumerate(parts) if count)
    return " ".join(f"{count}{unit}" for count, unit in parts[first : first + 2] if count)


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (RFC 3339), or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def relative(value: Any, now: datetime) -> str:
    """`3s ago`, `in 5m`, `now`; `-` for no time. One unit, rounded: a glance, not a record."""
    at = parse_time(value)
    if at is None:
        return "-"
    delta = (at - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    span = _coarse(abs(delta))
    return f"in {span}" if delta > 0 else f"{span} ago"


def _coarse(seconds: float) -> str:
    for size, unit, next_size in ((1, "s", 60), (60, "m", 3600), (3600, "h", 86400)):
        count = round(seconds / size)
        if count * size < next_size:
            return f"{count}{unit}"
    return f"{round(seconds / 86400)}d"


def between(start: Any, end: Any) -> str | None:
    """How long from one API timestamp to another, if both are there."""
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return None
    return format_duration(max(0.0, (last - first).total_seconds()))


def compact(value: Any, width: int = 0) -> str:
    """A JSON value on one line, cut to `width` characters if one is given."""
    text = json.dumps(value, ensure_ascii=False)
    if width and len(text) > width:
        return text[: width - 1] + "…"
    return text


# --- tables and blocks --------------------------------------------------------------------------

Paint = Callable[[int, str], str]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], paint: Paint | None = None) -> str:
    """Columns aligned on two spaces. `paint(column, text)` may colour a cell: the padding is
    added outside the colour, so escape codes never count towards a column's width."""
    grid = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(headers))]
    lines = []
    for number, row in enumerate(grid):
        cells = []
        for col, text in enumerate(row):
            shown = text if number == 0 or paint is None else paint(col, text)
            cells.append(shown + " " * (widths[col] - len(text)))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def block(pairs: Iterable[tuple[str, str | None]]) -> str:
    """`key  value` lines with the values aligned; pairs whose value is None are left out."""
    shown = [(key, value) for key, value in pairs if value is not None]
    width = max((len(key) for key, _ in shown), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}".rstrip() for key, value in shown)


# --- a run's events -----------------------------------------------------------------------------


def render_tail(
    events: Iterable[dict[str, Any]], out: TextIO, style: Style = PLAIN
) -> dict[str, Any] | None:
    """Print events as they come: progress as a bar redrawn in place (one line each when `out`
    is not a terminal), everything else as a line, and a last line saying how the run ended.
    Returns the terminal event (None if the events stopped before one)."""
    live = _isatty(out)
    bar_shown = False
    try:
        for event in events:
            kind, data = event["type"], event.get("data") or {}
            if kind == "run.progress" and live:
                out.write("\r\x1b[2K" + progress_bar(data))
                bar_shown = True
            else:
                if bar_shown:
                    out.write("\n")
                    bar_shown = False
                out.write(
                    (final_line(event, style) if kind in TERMINAL else event_line(event)) + "\n"
                )
            out.flush()
            if kind in TERMINAL:
                return event
    finally:
        if bar_shown:  # also on Ctrl-C: the shell prompt must not land on the bar
            out.write("\n")
            out.flush()
    return None


def progress_bar(data: dict[str, Any]) -> str:
    percent = max(0.0, min(100.0, float(data.get("percent") or 0)))
    filled = round(BAR_WIDTH * percent / 100)
    message = data.get("message") or ""
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f}% {message}".rstrip()


def event_line(event: dict[str, Any]) -> str:
    kind, data = event["type"], event.get("data") or {}
    at = str(event.get("at") or "")[11:23]  # HH:MM:SS.mmm of an RFC 3339 time
    if kind == "run.progress":
        detail = f"{data.get('percent')}% {data.get('message') or ''}".rstrip()
    elif kind == "run.log":
        detail = f"[{data.get('level', 'info')}] {data.get('message', '')}"
    else:
        detail = " ".join(f"{k}={json.dumps(v)}" for k, v in data.items())
    return f"{at} #{event['seq']} {kind} {detail}".rstrip()


def final_line(event: dict[str, Any], style: Style = PLAIN) -> str:
    kind, data = event["type"], event.get("data") or {}
    if kind == "run.succeeded":
        return f"{style.status('succeeded')}: result {compact(data.get('result'))}"
    if kind == "run.failed":
        error = data.get("error") or {}
        attempt = data.get("attempt")
        what = f"{error.get('type')}: {error.get('message')}"
        return f"{style.status('failed')} after attempt {attempt}: {what}"
    return f"{style.status('cancelled')}: {data.get('reason') or 'cancelled'}"


# --- runs ---------------------------------------------------------------------------------------

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def submitted(run: dict[str, Any], headers: Mapping[str, str], now: datetime, style: Style) -> str:
    """What `runlane submit` says: a new run, or the one an Idempotency-Key or dedupe key gave."""
    status = style.status(run["status"])
    if headers.get("idempotent-replayed") == "true":
        return f"run {run['id']} already exists for this Idempotency-Key (replayed): {status}"
    if headers.get("deduplicated") == "true":
        return f"run {run['id']} already exists for this dedupe key: {status}"
    line = f"created run {run['id']}: {run['task']} on queue {run['queue']}, {status}"
    if run["status"] == "delayed":
        line += f" until {run['scheduled_for']} ({relative(run['scheduled_for'], now)})"
    return line


def changed(action: str, run: dict[str, Any], style: Style) -> str:
    """What `runlane cancel` / `retry` say about the run they changed."""
    status = style.status(run["status"])
    if action == "cancel" and run["status"] not in FINISHED:
        return f"cancel requested: run {run['id']} is {status} and stops within seconds"
    done = "cancelled" if action == "cancel" else "retried"
    return f"{done} run {run['id']}: now {status}"


def run_table(runs: Sequence[dict[str, Any]], now: datetime, style: Style) -> str:
    if not runs:
        return ""
    rows = [
        [
            run["id"],
            run["status"],
            run["task"],
            run["queue"],
            f"{run['attempt']}/{run['max_attempts']}",
            relative(run["created_at"], now),
            between(run.get("started_at"), run.get("finished_at")) or "-",
        ]
        for run in runs
    ]
    headers = ["ID", "STATUS", "TASK", "QUEUE", "ATTEMPT", "CREATED", "TOOK"]
    return table(headers, rows, lambda col, text: style.status(text) if col == 1 else text)


def run_block(run: dict[str, Any], now: datetime, style: Style) -> str:
    """`runlane get`: the run's fields as aligned lines, times relative with the exact time."""
    pairs = [
        ("id", run["id"]),
        ("task", run["task"]),
        ("status", style.status(run["status"]) + _waiting(run.get("waiting"))),
        ("queue", f"{run['queue']} (priority {run['priority']})"),
        ("attempt", f"{run['attempt']} of {run['max_attempts']}"),
        ("progress", _progress(run.get("progress"))),
        *_run_times(run, now),
        *_run_payload(run),
    ]
    return block(pairs)


def _waiting(waiting: Any) -> str:
    if not isinstance(waiting, dict):
        return ""
    detail = waiting.get("detail")
    return f" (waiting: {waiting.get('reason')}" + (f", {detail})" if detail else ")")


def _progress(progress: Any) -> str | None:
    if not isinstance(progress, dict):
        return None
    return f"{progress.get('percent')}% {progress.get('message') or ''}".rstrip()


def _run_times(run: dict[str, Any], now: datetime) -> list[tuple[str, str | None]]:
    def when(key: str) -> str | None:
        value = run.get(key)
        return f"{relative(value, now)} ({value})" if value else None

    created, scheduled = parse_time(run.get("created_at")), parse_time(run.get("scheduled_for"))
    later = created and scheduled and (scheduled - created).total_seconds() >= 1
    return [
        ("created", when("created_at")),
        ("scheduled", when("scheduled_for") if later else None),
        ("started", when("started_at")),
        ("finished", when("finished_at")),
        ("took", between(run.get("started_at"), run.get("finished_at"))),
        ("eta", when("eta")),
    ]


def _run_payload(run: dict[str, Any]) -> list[tuple[str, str | None]]:
    error = run.get("error")
    return [
        ("input", compact(run.get("input"))),
        ("result", compact(run["result"]) if run.get("status") == "succeeded" else None),
        ("error", f"{error.get('type')}: {error.get('message')}" if error else None),
        ("metadata", compact(run["metadata"]) if run.get("metadata") else None),
        ("idempotency key", run.get("idempotency_key")),
        ("dedupe key", run.get("dedupe_key")),
        ("parent", run.get("parent_id")),
        ("limit key", run.get("limit_key")),
    ]
