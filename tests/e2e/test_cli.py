"""The `runlane` client commands against the Procfile stack, as a user runs them: every command
with --json parsed and its human view read, and an error case for each."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import auth
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e
RUNLANE = Path(sys.executable).parent / "runlane"
TERMINAL = {"succeeded", "failed", "cancelled"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def cli_env(base: str, token: str = "tok-alpha", **env: str | None) -> dict[str, str]:
    """The environment of a runlane process; a None value removes that variable."""
    # NO_COLOR removed: output has no colour because stdout is not a terminal, not because of it
    merged = {**os.environ, "RUNLANE_URL": base, "RUNLANE_TOKEN": token, "NO_COLOR": None, **env}
    return {name: value for name, value in merged.items() if value is not None}


def runlane(
    stack: Stack,
    *args: str,
    token: str = "tok-alpha",
    env: dict[str, str | None] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNLANE, *args], env=cli_env(stack.base, token, **(env or {})), input=stdin,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ok_text(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout, "no colour when stdout is not a terminal"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The stderr of a command that must have failed with `code`, cleanly."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr
    return result.stderr


def finished(stack: Stack, run_id: str) -> dict[str, Any] | None:
    run = requests.get(f"{stack.base}/v1/runs/{run_id}", headers=auth(), timeout=5).json()
    return run if run["status"] in TERMINAL else None


def wait_finished(stack: Stack, run_id: str) -> dict[str, Any]:
    return wait_for(lambda: finished(stack, run_id), 30, message=f"run {run_id} to finish")


def submit_id(stack: Stack, *args: str) -> str:
    result = runlane(stack, "submit", *args, "-q")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_submit_then_get(stack: Stack) -> None:
    run = ok_json(
        runlane(stack, "submit", "demo.echo", "--input", '{"n": [1, 2]}', "--priority", "3",
                "--max-attempts", "2", "--idempotency-key", "cli-1", "--json")
    )  # fmt: skip
    again = ok_json(
        runlane(stack, "submit", "demo.echo", "--input", '{"n": [1, 2]}', "--priority", "3",
                "--max-attempts", "2", "--idempotency-key", "cli-1", "--json")
    )  # fmt: skip

    assert run["task"] == "demo.echo" and run["priority"] == 3 and run["max_attempts"] == 2
    elsewhere = ok_json(
        runlane(stack, "submit", "demo.noop", "--queue", "nobody-serves-this", "--json")
    )
    assert elsewhere["queue"] == "nobody-serves-this" and elsewhere["status"] == "queued"
    assert again["id"] == run["id"], "the same Idempotency-Key replays the first run"
    wait_for(lambda: finished(stack, run["id"]), 30, message="the run to finish")
    got = ok_json(runlane(stack, "get", run["id"], "--json"))
    assert got["status"] == "succeeded"
    assert got["result"] == {"n": [1, 2]}
    lines = ok_text(runlane(stack, "get", run["id"])).splitlines()
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in lines)
    assert (shown["id"], shown["status"], shown["attempt"]) == (run["id"], "succeeded", "1 of 2")
    assert shown["result"] == '{"n": [1, 2]}' and shown["idempotency key"] == "cli-1"
    assert re.fullmatch(r"(now|\d+s ago) \(.+Z\)", shown["finished"]), shown
    assert "404 Not Found: no such run" in failed(runlane(stack, "get", "nope"))


def test_cancel_then_retry_a_delayed_run(stack: Stack) -> None:
    run = ok_json(runlane(stack, "submit", "demo.noop", "--delay-ms", "600000", "--json"))
    assert run["status"] == "delayed"

    cancelled = ok_json(runlane(stack, "cancel", run["id"], "--json"))
    assert cancelled["status"] == "cancelled"
    again = runlane(stack, "cancel", run["id"])
    assert again.returncode != 0, "cancelling a finished run is a conflict"
    assert again.stderr.strip()

    retried = ok_json(runlane(stack, "retry", run["id"], "--json"))
    assert retried["id"] == run["id"]
    assert retried["status"] in {"queued", "running", "succeeded"}
    done = wait_for(lambda: finished(stack, run["id"]), 30, message="the retried run to finish")
    assert done["status"] == "succeeded"
    refused = failed(runlane(stack, "retry", run["id"]))
    assert "409 Conflict: only failed or cancelled runs can be retried" in refused
    other = submit_id(stack, "demo.noop", "--delay", "10m")
    assert ok_text(runlane(stack, "cancel", other)) == f"cancelled run {other}: now cancelled\n"
    assert "409 Conflict: run is already cancelled" in failed(runlane(stack, "cancel", other))
    assert ok_text(runlane(stack, "retry", other)).startswith(f"retried run {other}: now ")
    assert "404" in failed(runlane(stack, "cancel", "00000000-0000-0000-0000-000000000000"))


def test_queues_lists_the_callers_queues(stack: Stack) -> None:
    run = ok_json(runlane(stack, "submit", "demo.noop", "--json"))
    wait_for(lambda: finished(stack, run["id"]), 30, message="the run to finish")

    queues = ok_json(runlane(stack, "queues", "--json"))

    default = next(q for q in queues["items"] if q["name"] == "default")
    assert default["counts"]["succeeded"] >= 1


def test_pause_then_resume_a_queue(stack: Stack) -> None:
    assert ok_json(runlane(stack, "pause", "reports", "--json"))["paused"] is True
    paused = ok_json(runlane(stack, "queues", "--json"))["items"]
    assert any(q["name"] == "reports" and q["paused"] for q in paused)
    assert ok_json(runlane(stack, "resume", "reports", "--json"))["paused"] is False
    paused = ok_text(runlane(stack, "pause", "reports"))
    assert paused.startswith("paused queue reports: your runs in it start only after")
    assert ok_text(runlane(stack, "resume", "reports")).startswith("resumed queue reports")
    assert "404" in failed(runlane(stack, "pause", "not a queue!"))
    assert "no such queue" in failed(runlane(stack, "resume", "not a queue!"))


def test_tail_prints_every_event_until_the_run_ends(stack: Stack) -> None:
    run = ok_json(
        runlane(stack, "submit", "demo.progress", "--input", '{"steps": 3, "interval_ms": 50}',
                "--json")
    )  # fmt: skip

    tail = runlane(stack, "tail", run["id"])

    assert tail.returncode == 0, tail.stderr
    for kind in ("run.queued", "run.started", "run.progress"):
        assert kind in tail.stdout
    assert tail.stdout.count("run.progress") == 3
    assert tail.stdout.splitlines()[-1].startswith("succeeded")
    after = runlane(stack, "tail", run["id"], "--after", "3")
    assert after.returncode == 0, after.stderr
    assert "run.queued" not in after.stdout
    assert after.stdout.splitlines()[-1].startswith("succeeded")


def test_tail_exits_non_zero_when_the_run_fails(stack: Stack) -> None:
    run = ok_json(runlane(stack, "submit", "demo.fail", "--input", '{"times": 1}', "--json"))

    tail = runlane(stack, "tail", run["id"])

    assert tail.returncode == 1
    assert tail.stdout.splitlines()[-1].startswith("failed")


def test_http_errors_exit_non_zero_with_the_problem(stack: Stack) -> None:
    missing = runlane(stack, "get", "00000000-0000-0000-0000-000000000000")
    unknown_task = runlane(stack, "submit", "no.such.task")
    bad_token = runlane(stack, "queues", token="wrong")
    not_json = runlane(stack, "submit", "demo.echo", "--input", "{nope")

    for result in (missing, unknown_task, bad_token, not_json):
        assert result.returncode != 0
        assert result.stderr.strip()
        assert "Traceback" not in result.stderr
    assert "404" in missing.stderr or "not found" in missing.stderr.lower()
    assert "401" in bad_token.stderr or "token" in bad_token.stderr.lower()
    assert "task: unknown task 'no.such.task'" in failed(unknown_task)
    assert "--input" in failed(not_json, 2), "bad JSON is a usage error"


def test_the_server_and_token_are_found_as_the_stack_was_started(
    stack: Stack, tmp_path: Path
) -> None:
    home = tmp_path / "cli-home"  # not the stack's own home (dev mode is off there)
    home.mkdir()
    (home / "dev-token").write_text("tok-alpha\n")
    found = {"RUNLANE_URL": None, "RUNLANE_TOKEN": None, "PORT": str(stack.port),
             "RUNLANE_HOME": str(home)}  # fmt: skip
    assert "items" in ok_json(runlane(stack, "queues", "--json", env=found))

    wrong = {"RUNLANE_URL": "http://127.0.0.1:9", "RUNLANE_TOKEN": "wrong"}  # nothing there
    given = ("--url", stack.base, "--token", "tok-alpha")
    assert "items" in ok_json(runlane(stack, *given, "--json", "queues", env=wrong))
    assert "items" in ok_json(runlane(stack, "queues", *given, "--json", env=wrong))
    refused = failed(runlane(stack, "queues", "--url", stack.base, env=wrong))
    assert "401" in refused and "the token came from RUNLANE_TOKEN" in refused


# --- each command: --json, the human view and an error ------------------------------------------


def test_submit_sets_every_run_field(stack: Stack) -> None:
    run = ok_json(
        runlane(stack, "submit", "demo.noop", "--queue", "nobody-serves-this", "--priority", "2",
                "--delay", "5m", "--max-attempts", "3", "--metadata", '{"team": "ops"}',
                "--key", "cli-all", "--input", "-", "--json", stdin='{"from": "stdin"}')
    )  # fmt: skip
    assert (run["queue"], run["priority"], run["max_attempts"]) == ("nobody-serves-this", 2, 3)
    assert (run["metadata"], run["idempotency_key"]) == ({"team": "ops"}, "cli-all")
    assert run["input"] == {"from": "stdin"} and run["status"] == "delayed"
    created = datetime.fromisoformat(run["created_at"])
    delay = datetime.fromisoformat(run["scheduled_for"]) - created
    assert timedelta(seconds=299) < delay < timedelta(seconds=301)

    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    later = ok_json(runlane(stack, "submit", "demo.noop", "--run-at",
                            at.isoformat().replace("+00:00", "Z"), "--json"))  # fmt: skip
    assert datetime.fromisoformat(later["scheduled_for"]) == at

    retried = submit_id(stack, "demo.fail", "--input", '{"times": 1}', "--max-attempts", "2",
                        "--backoff", "fixed:300ms")  # fmt: skip
    timed_out = submit_id(stack, "demo.sleep", "--input", '{"seconds": 10}', "--timeout", "500ms")
    assert wait_finished(stack, retried)["status"] == "succeeded"
    events = ok_json(runlane(stack, "events", retried, "--json"))["items"]
    assert [e["data"]["delay_ms"] for e in events if e["type"] == "run.retrying"] == [300]
    assert wait_finished(stack, timed_out)["error"]["type"] == "Timeout"


def test_submit_says_what_it_did_and_why_it_refused(stack: Stack) -> None:
    quiet = runlane(stack, "submit", "demo.echo", "-q", "--key", "cli-q")
    assert quiet.returncode == 0 and UUID.fullmatch(quiet.stdout.strip()), quiet.stdout
    run_id = quiet.stdout.strip()
    replayed = ok_text(runlane(stack, "submit", "demo.echo", "--key", "cli-q"))
    assert f"run {run_id} already exists for this Idempotency-Key (replayed)" in replayed
    created = ok_text(runlane(stack, "submit", "demo.noop", "--delay", "1m"))
    assert re.match(rf"created run {UUID.pattern}: demo.noop on queue default, delayed", created)
    assert "(in 1m)" in created

    refused = failed(runlane(stack, "submit", "demo.echo", "--priority", "0", "--timeout", "0"))
    assert "422" in refused
    assert "\n  priority: " in refused and "\n  timeout_s: " in refused


def test_submit_with_a_dedupe_key_says_which_run_holds_it(stack: Stack) -> None:
    args = ("submit", "demo.noop", "--queue", "nobody-serves-this", "--dedupe-key", "cli-d")
    run = ok_json(runlane(stack, *args, "--limit-key", "cust-1", "--json"))
    assert (run["dedupe_key"], run["limit_key"]) == ("cli-d", "cust-1")
    held = ok_text(runlane(stack, *args))
    assert f"run {run['id']} already exists for this dedupe key: queued" in held
    first = ok_json(runlane(stack, "submit", "demo.noop", "--input", "1", "--dedupe-key", "cli-b",
                            "--debounce", "10m", "--json"))  # fmt: skip
    last = ok_json(runlane(stack, "submit", "demo.noop", "--input", "2", "--dedupe-key", "cli-b",
                           "--debounce", "10m", "--json"))  # fmt: skip
    assert (last["id"], last["input"], last["status"]) == (first["id"], 2, "delayed")
    ttl = ok_json(runlane(stack, "submit", "demo.noop", "--dedupe-key", "cli-t",
                          "--dedupe-ttl", "1h", "--json"))  # fmt: skip
    assert ttl["dedupe_key"] == "cli-t"
    both = runlane(stack, "submit", "demo.noop", "--dedupe-key", "k", "--debounce", "1s",
                   "--dedupe-ttl", "1s")  # fmt: skip
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert "need --dedupe-key" in failed(
        runlane(stack, "submit", "demo.noop", "--debounce", "1s"), 2
    )


def test_list_filters_pages_and_follows_every_page(stack: Stack) -> None:
    ids = [submit_id(stack, "demo.noop") for _ in range(3)]
    echo = submit_id(stack, "demo.echo")
    for run_id in [*ids, echo]:
        wait_finished(stack, run_id)

    page = ok_json(runlane(stack, "list", "--task", "demo.noop", "--limit", "2", "--json"))
    assert [run["id"] for run in page["items"]] == ids[:0:-1] and page["next_cursor"]
    human = runlane(stack, "list", "--task", "demo.noop", "--limit", "2")
    assert ok_text(human).splitlines()[0].split() == ["ID", "STATUS", "TASK", "QUEUE", "ATTEMPT",
                                                      "CREATED", "TOOK"]  # fmt: skip
    assert f"{ids[2]}  succeeded  demo.noop  default  1/1" in human.stdout
    hint = human.stderr.strip()
    assert hint == f"next: runlane list --task demo.noop --limit 2 --cursor {page['next_cursor']}"
    rest = ok_json(runlane(stack, *shlex.split(hint.removeprefix("next: runlane ")), "--json"))
    assert [run["id"] for run in rest["items"]] == [ids[0]] and rest["next_cursor"] is None

    every = ok_json(runlane(stack, "list", "--all", "--limit", "2", "--json"))
    assert [run["id"] for run in every["items"]] == [echo, *ids[::-1]]
    only = ok_json(runlane(stack, "list", "--status", "succeeded", "--task", "demo.echo", "--json"))
    assert [run["id"] for run in only["items"]] == [echo]
    assert "cursor" in failed(runlane(stack, "list", "--cursor", "garbage"))


def test_events_lists_a_runs_history(stack: Stack) -> None:
    run_id = submit_id(stack, "demo.progress", "--input", '{"steps": 3, "interval_ms": 10}')
    wait_finished(stack, run_id)

    items = ok_json(runlane(stack, "events", run_id, "--json"))["items"]
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    assert items[0]["type"] == "run.queued" and items[-1]["type"] == "run.succeeded"
    some = ok_json(runlane(stack, "events", run_id, "--after", "2", "--limit", "2", "--json"))
    assert [e["seq"] for e in some["items"]] == [3, 4]
    human = runlane(stack, "events", run_id, "--after", "2", "--limit", "2")
    lines = ok_text(human).splitlines()
    assert len(lines) == 2 and lines[0].split()[1:3] == ["#3", "run.progress"]
    assert human.stderr.strip() == f"next: runlane events {run_id} --after 4"
    assert "404" in failed(runlane(stack, "events", "00000000-0000-0000-0000-000000000000"))


def test_tail_json_prints_one_event_per_line_and_ctrl_c_exits_130(
    stack: Stack, tmp_path: Path
) -> None:
    run_id = submit_id(stack, "demo.progress", "--input", '{"steps": 2, "interval_ms": 10}')
    lines = ok_text(runlane(stack, "tail", run_id, "--json")).splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run.succeeded"
    assert "404" in failed(runlane(stack, "tail", "00000000-0000-0000-0000-000000000000"))

    sleeper = submit_id(stack, "demo.sleep", "--input", '{"seconds": 30}')
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        tail = subprocess.Popen([RUNLANE, "tail", sleeper], env=cli_env(stack.base),
                                stdout=stdout, stderr=stderr)  # fmt: skip
        wait_for(lambda: "run.started" in out.read_text(), 30, message="the tail to show the start")
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 130
    assert err.read_text() == "", "Ctrl-C exits quietly"
    stopping = ok_text(runlane(stack, "cancel", sleeper))
    assert f"cancel requested: run {sleeper} is running" in stopping
    assert wait_finished(stack, sleeper)["status"] == "cancelled"


def test_queues_is_one_readable_line_per_queue(stack: Stack) -> None:
    wait_finished(stack, submit_id(stack, "demo.noop"))
    submit_id(stack, "demo.noop", "--queue", "nobody-serves-this")
    ok_text(runlane(stack, "pause", "reports"))

    text = ok_text(runlane(stack, "queues"))
    rows = {line.split()[0]: line.split() for line in text.splitlines()}
    header = rows["QUEUE"]
    assert header[:3] == ["QUEUE", "STATE", "WORKERS"] and "SUCCEEDED" in header
    default = dict(zip(header, rows["default"], strict=False))
    assert default["STATE"] == "active" and int(default["WORKERS"]) >= 1
    assert int(default["SUCCEEDED"]) >= 1
    lonely = dict(zip(header, rows["nobody-serves-this"], strict=False))
    assert (lonely["WORKERS"], lonely["QUEUED"]) == ("0", "1")
    assert "! nobody-serves-this: 1 queued, but no live worker serves it" in text
    assert dict(zip(header, rows["reports"], strict=False))["STATE"] == "paused"
    assert "401" in failed(runlane(stack, "queues", token="wrong"))


def test_tasks_and_workers_list_what_runs_and_where(stack: Stack) -> None:
    sleeper = submit_id(stack, "demo.sleep", "--input", '{"seconds": 30}')
    names = [task["name"] for task in ok_json(runlane(stack, "tasks", "--json"))["items"]]
    assert {"demo.echo", "demo.noop", "demo.sleep", "demo.progress", "demo.fail"} <= set(names)
    lines = ok_text(runlane(stack, "tasks")).splitlines()
    assert lines[0].split() == ["TASK", "QUEUE", "ATTEMPTS", "BACKOFF", "TIMEOUT", "DESCRIPTION"]
    assert any(line.startswith("demo.sleep ") for line in lines)
    assert "401" in failed(runlane(stack, "tasks", token="wrong"))

    def running_it() -> list[dict[str, Any]]:
        items = ok_json(runlane(stack, "workers", "--json"))["items"]
        return [w for w in items if sleeper in w["running"]]

    (worker,) = wait_for(running_it, 30, message="a worker to report the run")
    assert "default" in worker["queues"] and worker["pid"] > 0
    lines = ok_text(runlane(stack, "workers")).splitlines()
    assert lines[0].split() == ["WORKER", "HOST", "PID", "QUEUES", "CONCURRENCY", "STARTED",
                                "HEARTBEAT", "RUNNING"]  # fmt: skip
    row = next(line for line in lines if line.startswith(worker["name"]))
    assert row.split()[2:4] == [str(worker["pid"]), "default"] and row.endswith(sleeper)
    assert "401" in failed(runlane(stack, "workers", token="wrong"))
    ok_text(runlane(stack, "cancel", sleeper))


def test_schedules_create_list_replace_and_delete(stack: Stack) -> None:
    made = ok_text(runlane(stack, "schedules", "create", "ping", "demo.noop", "--every", "1h"))
    assert made == "created schedule ping: demo.noop every 1h, next run in 1h\n"
    again = ok_text(runlane(stack, "schedules", "create", "ping", "demo.noop", "--every", "2h"))
    assert again.startswith("replaced schedule ping: demo.noop every 2h")
    nightly = ok_json(
        runlane(stack, "schedules", "create", "nightly", "demo.echo", "--cron", "0 3 * * *",
                "--input", '{"a": 1}', "--queue", "reports", "--json")
    )  # fmt: skip
    assert (nightly["cron"], nightly["input"], nightly["queue"]) == (
        "0 3 * * *",
        {"a": 1},
        "reports",
    )

    listed = ok_json(runlane(stack, "schedules", "list", "--json"))["items"]
    assert {item["name"]: item["every_s"] for item in listed} == {"nightly": None, "ping": 7200}
    table = ok_text(runlane(stack, "schedules")).splitlines()
    assert table[0].split() == ["SCHEDULE", "TASK", "QUEUE", "TRIGGER", "NEXT", "INPUT"]
    assert any("every 2h" in line and line.startswith("ping ") for line in table)
    assert any("cron 0 3 * * *" in line and line.startswith("nightly ") for line in table)

    assert ok_text(runlane(stack, "schedules", "delete", "ping")) == "deleted schedule ping\n"
    assert "no schedule named 'ping'" in failed(runlane(stack, "schedules", "delete", "ping"))
    bad_cron = failed(runlane(stack, "schedules", "create", "x", "demo.noop", "--cron", "nope"))
    assert "\n  cron: " in bad_cron
    unknown = failed(runlane(stack, "schedules", "create", "x", "no.task", "--every", "5m"))
    assert "task: unknown task 'no.task'" in unknown
