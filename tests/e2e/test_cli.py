"""The `runlane` client commands against the Procfile stack, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import auth
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e
RUNLANE = Path(sys.executable).parent / "runlane"
TERMINAL = {"succeeded", "failed", "cancelled"}


def runlane(stack: Stack, *args: str, token: str = "tok-alpha") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNLANE_URL": stack.base, "RUNLANE_TOKEN": token}
    return subprocess.run(
        [RUNLANE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def finished(stack: Stack, run_id: str) -> dict[str, Any] | None:
    run = requests.get(f"{stack.base}/v1/runs/{run_id}", headers=auth(), timeout=5).json()
    return run if run["status"] in TERMINAL else None


def test_submit_then_get(stack: Stack) -> None:
    run = ok_json(
        runlane(stack, "submit", "demo.echo", "--input", '{"n": [1, 2]}', "--priority", "3",
                "--max-attempts", "2", "--idempotency-key", "cli-1")
    )  # fmt: skip
    again = ok_json(
        runlane(stack, "submit", "demo.echo", "--input", '{"n": [1, 2]}', "--priority", "3",
                "--max-attempts", "2", "--idempotency-key", "cli-1")
    )  # fmt: skip

    assert run["task"] == "demo.echo" and run["priority"] == 3 and run["max_attempts"] == 2
    elsewhere = ok_json(runlane(stack, "submit", "demo.noop", "--queue", "nobody-serves-this"))
    assert elsewhere["queue"] == "nobody-serves-this" and elsewhere["status"] == "queued"
    assert again["id"] == run["id"], "the same Idempotency-Key replays the first run"
    wait_for(lambda: finished(stack, run["id"]), 30, message="the run to finish")
    got = ok_json(runlane(stack, "get", run["id"]))
    assert got["status"] == "succeeded"
    assert got["result"] == {"n": [1, 2]}


def test_cancel_then_retry_a_delayed_run(stack: Stack) -> None:
    run = ok_json(runlane(stack, "submit", "demo.noop", "--delay-ms", "600000"))
    assert run["status"] == "delayed"

    cancelled = ok_json(runlane(stack, "cancel", run["id"]))
    assert cancelled["status"] == "cancelled"
    again = runlane(stack, "cancel", run["id"])
    assert again.returncode != 0, "cancelling a finished run is a conflict"
    assert again.stderr.strip()

    retried = ok_json(runlane(stack, "retry", run["id"]))
    assert retried["id"] == run["id"]
    assert retried["status"] in {"queued", "running", "succeeded"}
    done = wait_for(lambda: finished(stack, run["id"]), 30, message="the retried run to finish")
    assert done["status"] == "succeeded"


def test_queues_lists_the_callers_queues(stack: Stack) -> None:
    run = ok_json(runlane(stack, "submit", "demo.noop"))
    wait_for(lambda: finished(stack, run["id"]), 30, message="the run to finish")

    queues = ok_json(runlane(stack, "queues"))

    default = next(q for q in queues["items"] if q["name"] == "default")
    assert default["counts"]["succeeded"] >= 1


def test_pause_then_resume_a_queue(stack: Stack) -> None:
    assert ok_json(runlane(stack, "pause", "reports"))["paused"] is True
    paused = ok_json(runlane(stack, "queues"))["items"]
    assert any(q["name"] == "reports" and q["paused"] for q in paused)
    assert ok_json(runlane(stack, "resume", "reports"))["paused"] is False


def test_tail_prints_every_event_until_the_run_ends(stack: Stack) -> None:
    run = ok_json(
        runlane(stack, "submit", "demo.progress", "--input", '{"steps": 3, "interval_ms": 50}')
    )

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
    run = ok_json(runlane(stack, "submit", "demo.fail", "--input", '{"times": 1}'))

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
