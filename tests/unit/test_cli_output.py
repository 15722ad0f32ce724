"""The CLI's pure formatting: durations both ways, relative times, tables, colour, the human
views of runs, queues, tasks, workers and schedules; its option values, its help (every option
says what it does) and its messages and exit codes for usage errors and an unreachable server."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runlane.cli import admin, commands, output, parser
from runlane.cli.output import PLAIN, Style
from tests.unit.cli import cli

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
COLOUR = Style(True)


def at(seconds: float) -> str:
    """An API timestamp `seconds` from NOW (negative: in the past)."""
    return (NOW + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def run(**fields: Any) -> dict[str, Any]:
    base = {"id": "r1", "task": "demo.echo", "queue": "default", "status": "succeeded",
            "input": {"a": 1}, "result": {"a": 1}, "error": None, "attempt": 1,
            "max_attempts": 3, "priority": 5, "progress": None, "metadata": {},
            "idempotency_key": None, "created_at": at(-10), "scheduled_for": at(-10),
            "started_at": at(-9), "finished_at": at(-7.5), "last_seq": 3}  # fmt: skip
    return {**base, **fields}


# --- durations and times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "plain", "seconds"),
    [("30s", "ms", 30), ("5m", "ms", 300), ("1500ms", "s", 1.5), ("1h30m", "ms", 5400),
     ("1.5s", "ms", 1.5), ("2d", "ms", 172800), ("250", "ms", 0.25), ("90", "s", 90),
     (" 10S ", "ms", 10)],
)  # fmt: skip
def test_parse_duration(text: str, plain: str, seconds: float) -> None:
    assert output.parse_duration(text, plain) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "5 m", "-5s", "5m30", "1e3"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        output.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0ms"), (0.35, "350ms"), (0.9999, "1s"), (3, "3s"), (4.25, "4.2s"), (59.97, "1m"),
     (200, "3m 20s"), (300, "5m"), (3600, "1h"), (7500, "2h 5m"), (86400 + 59, "1d"),
     (3 * 86400 + 4 * 3600 + 5, "3d 4h")],
)  # fmt: skip
def test_format_duration_shows_two_units_at_most(seconds: float, text: str) -> None:
    assert output.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("offset", "text"),
    [(0.4, "now"), (-0.9, "now"), (-3, "3s ago"), (299.98, "in 5m"), (-59.6, "1m ago"),
     (-90, "2m ago"), (-3570, "1h ago"), (2 * 3600 + 100, "in 2h"), (-3 * 86400, "3d ago")],
)  # fmt: skip
def test_relative_times_are_one_rounded_unit(offset: float, text: str) -> None:
    assert output.relative(at(offset), NOW) == text


def test_relative_between_and_compact() -> None:
    assert output.relative(None, NOW) == "-"
    assert output.relative("yesterday", NOW) == "-"
    assert output.relative("2024-05-01T11:59:57", NOW) == "3s ago", "naive times are UTC"
    assert output.between(at(-9), at(-7.5)) == "1.5s"
    assert output.between(at(-9), None) is None
    assert output.compact({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert output.compact("é" * 50, 10) == '"' + "é" * 8 + "…"


# --- tables, blocks and colour ------------------------------------------------------------------


def test_table_aligns_columns_and_colour_does_not_count_towards_width() -> None:
    rows = [["a", "succeeded", "x"], ["bbbb", "failed", "yy"]]
    plain = output.table(["ID", "STATUS", "N"], rows)
    assert plain.splitlines() == ["ID    STATUS     N", "a     succeeded  x", "bbbb  failed     yy"]
    painted = output.table(
        ["ID", "STATUS", "N"], rows, lambda col, t: COLOUR.status(t) if col == 1 else t
    )
    lines = painted.splitlines()
    assert lines[1] == "a     \x1b[32msucceeded\x1b[0m  x"
    assert lines[2] == "bbbb  \x1b[31mfailed\x1b[0m     yy"


def test_block_aligns_values_and_leaves_out_missing_ones() -> None:
    assert output.block([("id", "r1"), ("missing", None), ("attempt", "1 of 3")]) == (
        "id       r1\nattempt  1 of 3"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    assert Style.for_stream(Terminal(), {}).enabled
    assert not Style.for_stream(io.StringIO(), {}).enabled
    assert not Style.for_stream(Terminal(), {"NO_COLOR": "1"}).enabled
    assert not Style.for_stream(Terminal(), {"TERM": "dumb"}).enabled
    assert PLAIN.status("failed") == "failed"
    assert COLOUR.status("failed") == "\x1b[31mfailed\x1b[0m"
    assert COLOUR.status("unheard-of") == "unheard-of"


# --- runs ---------------------------------------------------------------------------------------


def test_run_table() -> None:
    runs = [run(), run(id="r2", status="delayed", started_at=None, finished_at=None, attempt=0)]
    assert output.run_table(runs, NOW, PLAIN).splitlines() == [
        "ID  STATUS     TASK       QUEUE    ATTEMPT  CREATED  TOOK",
        "r1  succeeded  demo.echo  default  1/3      10s ago  1.5s",
        "r2  delayed    demo.echo  default  0/3      10s ago  -",
    ]
    assert output.run_table([], NOW, PLAIN) == ""


def test_run_block_of_a_finished_run() -> None:
    text = output.run_block(run(metadata={"team": "ops"}, idempotency_key="k1"), NOW, PLAIN)
    assert text.splitlines() == [
        "id               r1",
        "task             demo.echo",
        "status           succeeded",
        "queue            default (priority 5)",
        "attempt          1 of 3",
        f"created          10s ago ({at(-10)})",
        f"started          9s ago ({at(-9)})",
        f"finished         8s ago ({at(-7.5)})",
        "took             1.5s",
        'input            {"a": 1}',
        'result           {"a": 1}',
        'metadata         {"team": "ops"}',
        "idempotency key  k1",
    ]


def test_run_block_of_a_waiting_failed_or_delayed_run() -> None:
    failed = output.run_block(
        run(status="failed", result=None, error={"type": "Boom", "message": "bad"}), NOW, PLAIN
    )
    assert "error     Boom: bad" in failed.splitlines() and "result" not in failed
    delayed = run(status="delayed", scheduled_for=at(300), started_at=None, finished_at=None,
                  waiting={"reason": "delayed", "detail": "until its run_at", "until": at(300)},
                  progress={"percent": 50, "message": "half"})  # fmt: skip
    lines = output.run_block(delayed, NOW, PLAIN).splitlines()
    assert "status     delayed (waiting: delayed, until its run_at)" in lines
    assert f"scheduled  in 5m ({at(300)})" in lines
    assert "progress   50% half" in lines


def test_submitted_and_changed_lines() -> None:
    new = run(status="delayed", scheduled_for=at(300))
    assert output.submitted(new, {}, NOW, PLAIN) == (
        f"created run r1: demo.echo on queue default, delayed until {at(300)} (in 5m)"
    )
    replayed = output.submitted(run(), {"idempotent-replayed": "true"}, NOW, PLAIN)
    assert replayed == "run r1 already exists for this Idempotency-Key (replayed): succeeded"
    assert "dedupe key" in output.submitted(run(), {"deduplicated": "true"}, NOW, PLAIN)
    assert output.changed("cancel", run(status="cancelled"), PLAIN) == (
        "cancelled run r1: now cancelled"
    )
    assert "stops within seconds" in output.changed("cancel", run(status="running"), PLAIN)
    assert output.changed("retry", run(status="queued"), PLAIN) == "retried run r1: now queued"


# --- queues, tasks, workers, schedules ----------------------------------------------------------


def queue(name: str, **fields: Any) -> dict[str, Any]:
    counts = {"queued": 0, "delayed": 0, "running": 0, "succeeded": 0, "failed": 0,
              "cancelled": 0}  # fmt: skip
    return {"name": name, "paused": False, "workers": 1, **fields,
            "counts": {**counts, **fields.get("counts", {})}}  # fmt: skip


def test_queue_table_is_one_line_per_queue_and_warns_of_queues_nobody_serves() -> None:
    queues = [queue("default", counts={"succeeded": 20, "failed": 2, "running": 1}),
              queue("reports", paused=True, workers=0, counts={"queued": 3})]  # fmt: skip
    assert admin.queue_table(queues, PLAIN).splitlines() == [
        "QUEUE    STATE   WORKERS  QUEUED  DELAYED  RUNNING  SUCCEEDED  FAILED  CANCELLED",
        "default  active  1        0       0        1        20         2       0",
        "reports  paused  0        3       0        0        0          0       0",
        "! reports: 3 queued, but no live worker serves it (see RUNLANE_QUEUES)",
    ]
    assert admin.queue_table([], PLAIN) == ""


def test_queue_table_shows_waiting_and_limits_when_the_api_has_them() -> None:
    limits = {"concurrency": 5, "rate": {"limit": 10, "period_s": 1}, "key_concurrency": None,
              "key_rate": None}  # fmt: skip
    queues = [queue("a", counts={"waiting": 2}, limits=limits), queue("b", limits=None)]
    lines = admin.queue_table(queues, PLAIN).splitlines()
    assert lines[0].split()[3:5] == ["WAITING", "QUEUED"] and lines[0].endswith("LIMITS")
    assert lines[1].endswith("  concurrency 5, rate 10/1s")
    assert lines[1].split()[:5] == ["a", "active", "1", "2", "0"]
    assert lines[2].split()[3] == "0" and lines[2].endswith("  -")
    assert admin.limits_text({"key_rate": {"limit": 2, "period_s": 60}}) == "key_rate 2/1m"
    assert admin.limits_text({"concurrency": None}) == "-"


def test_task_table_and_backoff_text() -> None:
    tasks = [{"name": "demo.echo", "queue": "default", "max_attempts": 1, "backoff": None,
              "timeout_s": None, "description": "Returns its input."},
             {"name": "mail.send", "queue": "emails", "max_attempts": 5,
              "backoff": {"type": "exponential", "delay_ms": 500, "jitter": 0.2},
              "timeout_s": 90, "description": ""}]  # fmt: skip
    assert admin.task_table(tasks).splitlines() == [
        "TASK       QUEUE    ATTEMPTS  BACKOFF                       TIMEOUT  DESCRIPTION",
        "demo.echo  default  1         -                             -        Returns its input.",
        "mail.send  emails   5         exponential 500ms jitter 0.2  1m 30s",
    ]
    assert admin.backoff_text({"type": "fixed", "delay_ms": 2000}) == "fixed 2s"


def test_worker_table() -> None:
    workers = [{"name": "w1", "hostname": "box", "pid": 42, "queues": ["default", "emails"],
                "concurrency": 4, "started_at": at(-7200), "last_heartbeat": at(-1.2),
                "running": ["r1", "r2", "r3"]},
               {"name": "w2", "hostname": "box", "pid": 43, "queues": ["default"],
                "concurrency": 1, "started_at": at(-60), "last_heartbeat": at(-0.5),
                "running": []}]  # fmt: skip
    assert admin.worker_table(workers, NOW).splitlines() == [
        "WORKER  HOST  PID  QUEUES          CONCURRENCY  STARTED  HEARTBEAT  RUNNING",
        "w1      box   42   default,emails  4            2h ago   1s ago     r1 +2",
        "w2      box   43   default         1            1m ago   now        -",
    ]


def test_schedule_table() -> None:
    items = [{"name": "nightly", "task": "demo.echo", "input": {"a": 1}, "queue": None,
              "cron": "0 3 * * *", "every_s": None, "next_fire_at": at(3 * 3600)},
             {"name": "ping", "task": "demo.noop", "input": None, "queue": "q2", "cron": None,
              "every_s": 300.0, "next_fire_at": at(299.99)}]  # fmt: skip
    assert admin.schedule_table(items, NOW).splitlines() == [
        "SCHEDULE  TASK       QUEUE     TRIGGER         NEXT   INPUT",
        'nightly   demo.echo  (task\'s)  cron 0 3 * * *  in 3h  {"a": 1}',
        "ping      demo.noop  q2        every 5m        in 5m  null",
    ]


# --- option values and help ---------------------------------------------------------------------


def test_backoff_option() -> None:
    assert commands.backoff("exponential:500ms") == {"type": "exponential", "delay_ms": 500}
    assert commands.backoff("fixed:2s:0.2") == {"type": "fixed", "delay_ms": 2000, "jitter": 0.2}
    assert commands.backoff("fixed:250") == {"type": "fixed", "delay_ms": 250}
    assert commands.backoff('{"type": "fixed", "delay_ms": 1}') == {"type": "fixed", "delay_ms": 1}
    for bad in ("exponential", "fixed:soon", "fixed:1s:lots", "[1]"):
        with pytest.raises(argparse.ArgumentTypeError):
            commands.backoff(bad)


def test_json_options_read_inline_stdin_or_a_file(tmp_path: Path, monkeypatch: Any) -> None:
    assert commands.json_value('{"a": [1]}') == {"a": [1]}
    monkeypatch.setattr("sys.stdin", io.StringIO('{"from": "stdin"}'))
    assert commands.json_value("-") == {"from": "stdin"}
    (tmp_path / "in.json").write_text("[1, 2]")
    assert commands.json_value(f"@{tmp_path / 'in.json'}") == [1, 2]
    for bad in ("{nope", f"@{tmp_path / 'missing.json'}"):
        with pytest.raises(argparse.ArgumentTypeError):
            commands.json_value(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="JSON object"):
        commands.json_object("[1]")


def test_run_at_option_needs_a_zone() -> None:
    assert commands.rfc3339("2030-01-01T09:00:00Z") == "2030-01-01T09:00:00Z"
    for bad in ("2030-01-01T09:00:00", "tomorrow"):
        with pytest.raises(argparse.ArgumentTypeError):
            commands.rfc3339(bad)


def subparsers(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its full name (`schedules create`), nested ones too."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{root.prog.removeprefix('runlane').strip()} {name}".strip()
                found[full] = sub
                found.update(subparsers(sub))
    return found


def test_every_command_and_option_has_a_help_text() -> None:
    commands_found = subparsers(parser())
    for name in ("submit", "get", "list", "events", "tail", "cancel", "retry", "queues", "pause",
                 "resume", "tasks", "workers", "schedules", "schedules create",
                 "schedules delete", "schedules list"):  # fmt: skip
        assert name in commands_found, name
    for name, sub in commands_found.items():
        assert sub.description, name
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_client_options_work_before_and_after_the_command() -> None:
    before = parser().parse_args(["--json", "--url", "http://a", "get", "r1"])
    after = parser().parse_args(["get", "r1", "--json", "--token", "t"])
    nested = parser().parse_args(["schedules", "delete", "x", "--json"])
    assert (before.json, before.url, before.token) == (True, "http://a", None)
    assert (after.json, after.url, after.token) == (True, None, "t")
    assert nested.json and nested.name == "x"
    assert parser().parse_args(["get", "r1"]).json is False


CLIENT_COMMANDS = ("submit", "get", "list", "events", "tail", "cancel", "retry", "queues",
                   "pause", "resume", "tasks", "workers", "schedules")  # fmt: skip


def test_help_names_every_command_and_where_server_and_token_come_from(capsys: Any) -> None:
    code, top, _ = cli(capsys, "--help")
    assert code == 0
    for needle in ("RUNLANE_URL", "PORT", "8000", "RUNLANE_TOKEN", "RUNLANE_HOME", "dev-token",
                   "NO_COLOR", "--json", "exit codes", *CLIENT_COMMANDS):  # fmt: skip
        assert needle in top, needle
    for name in CLIENT_COMMANDS:
        code, text, _ = cli(capsys, name, "--help")
        assert code == 0 and "--url" in text and "--json" in text and "examples:" in text, name


@pytest.mark.parametrize(
    ("args", "message"),
    [(("submit", "demo.echo", "--input", "{nope"), "--input: not JSON"),
     (("submit", "demo.echo", "--delay", "5x"), "not a duration: '5x'"),
     (("submit", "demo.echo", "--backoff", "exponential"), "TYPE:DELAY"),
     (("submit", "demo.echo", "--metadata", "[1]"), "JSON object"),
     (("submit", "demo.echo", "--run-at", "2030-01-01T09:00:00"), "RFC 3339"),
     (("submit", "x", "--delay", "5m", "--run-at", "2030-01-01T09:00:00Z"), "not allowed"),
     (("list", "--status", "lost"), "invalid choice: 'lost'"),
     (("schedules", "create", "x", "demo.noop"), "one of the arguments --cron --every"),
     (("get",), "RUN_ID"), (("nonsense",), "invalid choice"),
     (("queues", "--url", "localhost:1"), "http:// or https://")],
)  # fmt: skip
def test_usage_errors_exit_2_and_say_what_is_wrong(
    capsys: Any, nowhere: str, args: tuple[str, ...], message: str
) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 2 and message in err


def test_no_token_found_exits_2_naming_the_dev_token_file(
    capsys: Any, monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.delenv("RUNLANE_TOKEN", raising=False)
    monkeypatch.setenv("RUNLANE_HOME", str(tmp_path / "home"))
    code, _, err = cli(capsys, "queues")
    assert code == 2 and f"no dev token at {tmp_path / 'home' / 'dev-token'}" in err
    assert not (tmp_path / "home").exists(), "the dev token is read, never created"


def test_an_unreachable_server_is_named_by_every_command(capsys: Any, nowhere: str) -> None:
    run_id = "00000000-0000-0000-0000-000000000000"
    for args in (("submit", "demo.noop"), ("get", run_id), ("list",), ("events", run_id),
                 ("tail", run_id), ("cancel", run_id), ("retry", run_id), ("queues",),
                 ("pause", "q"), ("resume", "q"), ("tasks",), ("workers",), ("schedules",),
                 ("schedules", "create", "s", "demo.noop", "--every", "1m"),
                 ("schedules", "delete", "s")):  # fmt: skip
        code, _, err = cli(capsys, *args)
        assert code == 1 and f"cannot reach {nowhere} (Connection refused)" in err, args
