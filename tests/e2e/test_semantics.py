"""Run semantics with real `rq worker` processes started from the Procfile, over HTTP."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.conftest import auth
from tests.e2e.api import get_events, get_run, live_workers, post_run, status_is
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_cancel_running_sleep_ends_cancelled_within_grace(stack: Stack, settings):
    run = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 30}})
    wait_for(status_is(stack, run["id"], "running"), 15, message="the run to start")
    began = time.monotonic()
    response = requests.post(f"{stack.base}/v1/runs/{run['id']}/cancel", headers=auth(), timeout=10)
    assert response.status_code == 200
    done = wait_for(status_is(stack, run["id"], "cancelled"), 10, message="cancelled")
    took = time.monotonic() - began
    print(f"\ncancel of a running demo.sleep took {took:.2f}s")
    assert took < 1.5  # demo.sleep notices within 100 ms of the worker's notice (<= 1 s)
    assert done["error"] is None
    assert [e["type"] for e in get_events(stack, run["id"])][-1] == "run.cancelled"


def test_sigkilled_worker_run_is_recovered(stack: Stack, settings):
    run = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 2}})
    wait_for(status_is(stack, run["id"], "running"), 15, message="the run to start")
    stack.kill("worker")
    killed = time.monotonic()
    stack.start("worker")

    def stalled() -> bool:
        return any(e["type"] == "run.stalled" for e in get_events(stack, run["id"]))

    wait_for(stalled, 15, interval=0.05, message="run.stalled")
    recovered = time.monotonic() - killed
    done = wait_for(status_is(stack, run["id"], "succeeded"), 20, message="success")
    print(
        f"\nSIGKILLed worker: run.stalled and requeued {recovered:.2f}s after the kill "
        f"(lease {settings.lease_seconds}s); succeeded {time.monotonic() - killed:.2f}s after"
    )
    assert recovered < 15
    assert done["attempt"] == 1  # the stall spent no attempt
    types = [e["type"] for e in get_events(stack, run["id"])]
    assert types == ["run.queued", "run.started", "run.stalled", "run.started", "run.succeeded"]


def test_second_stall_fails_with_stalled(stack: Stack):
    run = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 60}})
    for n in (1, 2):

        def started(n: int = n) -> bool:
            types = [e["type"] for e in get_events(stack, run["id"])]
            return (
                types.count("run.started") == n and get_run(stack, run["id"])["status"] == "running"
            )

        wait_for(started, 20, interval=0.05, message=f"start number {n}")
        stack.kill("worker", n - 1)
        stack.start("worker")
    done = wait_for(status_is(stack, run["id"], "failed"), 20, message="failed")
    assert done["error"]["type"] == "Stalled"
    assert [e["type"] for e in get_events(stack, run["id"])].count("run.stalled") == 2


def assert_each_runs_once(stack: Stack, count: int) -> None:
    made = [post_run(stack, {"task": "demo.noop", "input": {"i": i}}) for i in range(count)]
    for run in made:
        wait_for(status_is(stack, run["id"], "succeeded"), 30, message="all succeeded")
    for run in made:
        types = [e["type"] for e in get_events(stack, run["id"])]
        assert types == ["run.queued", "run.started", "run.succeeded"], types


def test_two_workers_never_run_an_attempt_twice(stack_factory):
    assert_each_runs_once(stack_factory().start_all(workers=2), 150)


def test_an_rq_worker_pool_never_runs_an_attempt_twice(stack_factory):
    stack = stack_factory().start_all(workers=0)
    stack.commands["pool"] = (
        'rq worker-pool -n 2 -w workers.worker.RunlaneWorker --url "$REDIS_URL"'
    )
    pool = stack.start("pool")
    wait_for(lambda: live_workers(stack) == 2, 20, message="both pool workers to register")
    assert_each_runs_once(stack, 100)
    stack.signal(pool, signal.SIGTERM)
    assert pool.wait(15) == 0


def test_sigterm_lets_the_attempt_finish(stack: Stack):
    run = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 1.5}})
    wait_for(status_is(stack, run["id"], "running"), 15, message="the run to start")
    worker = stack.procs["worker"][0]
    stack.signal(worker, signal.SIGTERM)
    assert worker.wait(10) == 0
    assert get_run(stack, run["id"])["status"] == "succeeded"


def test_a_killed_worker_leaves_the_live_worker_count(stack: Stack):
    wait_for(lambda: live_workers(stack) == 1, 15, message="the worker to register")
    stack.kill("worker")
    killed = time.monotonic()

    wait_for(
        lambda: live_workers(stack) == 0, 25, interval=0.5, message="the dead worker to expire"
    )
    print(f"\na SIGKILLed worker left GET /v1/queues {time.monotonic() - killed:.1f}s after")
