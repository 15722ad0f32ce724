"""RUNLANE_WORKER_CONCURRENCY with a real `rq worker` from the Procfile: many attempts in flight in
one process, recovered after a SIGKILL, finished or handed back on SIGTERM."""

from __future__ import annotations

import signal
from datetime import datetime

import pytest

from tests.e2e.api import get_events, get_run, post_run, status_is
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(stack_factory) -> Stack:
    return stack_factory(RUNLANE_WORKER_CONCURRENCY="20").start_all()


def types_of(stack: Stack, run_id: str) -> list[str]:
    return [e["type"] for e in get_events(stack, run_id)]


def all_running(stack: Stack, made: list[dict]) -> bool:
    return all(get_run(stack, r["id"])["status"] == "running" for r in made)


def test_twenty_sleeps_in_one_worker_process(stack: Stack):
    made = [post_run(stack, {"task": "demo.sleep", "input": {"seconds": 0.5}}) for _ in range(20)]
    done = [wait_for(status_is(stack, r["id"], "succeeded"), 30, message="success") for r in made]
    first = min(datetime.fromisoformat(r["started_at"]) for r in done)
    last = max(datetime.fromisoformat(r["finished_at"]) for r in done)
    took = (last - first).total_seconds()
    print(f"\n20 x demo.sleep 0.5 s, one worker process at concurrency 20: {took:.2f}s")
    assert took < 3
    for run in made:
        assert types_of(stack, run["id"]) == ["run.queued", "run.started", "run.succeeded"]


def test_sigkill_with_attempts_in_flight_recovers_them_all(stack: Stack):
    made = [post_run(stack, {"task": "demo.sleep", "input": {"seconds": 2}}) for _ in range(5)]
    wait_for(lambda: all_running(stack, made), 15, message="all five to run")
    stack.kill("worker")
    stack.start("worker")  # with the stack's RUNLANE_WORKER_CONCURRENCY=20
    for run in made:
        done = wait_for(status_is(stack, run["id"], "succeeded"), 30, message="recovered")
        assert done["attempt"] == 1  # the stall spent no attempt
        assert types_of(stack, run["id"]) == [
            "run.queued",
            "run.started",
            "run.stalled",
            "run.started",
            "run.succeeded",
        ]


def test_sigterm_finishes_short_attempts_and_hands_back_long_ones(stack: Stack):
    short = [post_run(stack, {"task": "demo.sleep", "input": {"seconds": 1}}) for _ in range(3)]
    long = [post_run(stack, {"task": "demo.sleep", "input": {"seconds": 60}}) for _ in range(2)]
    wait_for(lambda: all_running(stack, short + long), 15, message="all five to run")
    worker = stack.procs["worker"][0]
    stack.signal(worker, signal.SIGTERM)
    assert worker.wait(10) == 0
    for run in short:
        assert get_run(stack, run["id"])["status"] == "succeeded"
    for run in long:  # past the grace: handed back, no attempt spent
        back = get_run(stack, run["id"])
        assert back["status"] == "queued" and back["attempt"] == 0
        assert types_of(stack, run["id"])[-1] == "run.queued"
