"""RUNLANE_WORKER_CONCURRENCY > 1 in process: attempts in threads of one RunlaneWorker, on real
Postgres and Redis; timeouts and hard stops raised in those threads."""

from __future__ import annotations

import dataclasses

import pytest

from app import runs
from app.domain import RunStatus
from tests.integration import test_execute as base
from tests.integration.test_execute import load, submit, terminal, types, work, work_until
from tests.integration.test_execute_semantics import cancel_soon, cancelled_after

services = base.services  # a fixture


@pytest.fixture
def test_settings(settings):
    return dataclasses.replace(settings, task_modules=("tests.tasks",), worker_concurrency=20)


def last_type(services, run_id: str) -> str:
    """The type of a run's last event (a busy reporter has more than one page of them)."""
    last_seq = load(services, run_id).last_seq
    with services.pool.connection() as conn:
        return runs.list_events(conn, run_id, after=last_seq - 1)[0].type.value


def span_seconds(services, run_ids: list[str]) -> float:
    done = [load(services, r) for r in run_ids]
    first = min(r.started_at for r in done)
    return (max(r.finished_at for r in done) - first).total_seconds()


def test_twenty_sleeps_run_at_once_each_exactly_once(services, test_settings, redis):
    made = [submit(services, "demo.sleep", {"seconds": 0.5}) for _ in range(20)]
    work(test_settings, redis)
    for run in made:
        assert load(services, run.id).status is RunStatus.SUCCEEDED
        assert types(services, run.id) == ["run.queued", "run.started", "run.succeeded"]
    took = span_seconds(services, [r.id for r in made])
    print(f"\n20 x demo.sleep 0.5 s with concurrency 20: {took:.2f}s from first start to last end")
    assert took < 3


def test_more_runs_than_threads_wait_for_a_free_one(services, test_settings, redis):
    settings = dataclasses.replace(test_settings, worker_concurrency=4)
    made = [submit(services, "demo.sleep", {"seconds": 0.3}) for _ in range(8)]
    work(settings, redis)
    done = sorted((load(services, r.id) for r in made), key=lambda r: r.started_at)
    assert {r.status for r in done} == {RunStatus.SUCCEEDED}
    # never more than 4 at once: the fifth starts only after one of the first four ended
    assert done[4].started_at >= min(r.finished_at for r in done[:4])


def test_priority_decides_what_is_popped_into_free_threads(services, test_settings, redis):
    settings = dataclasses.replace(test_settings, worker_concurrency=2)
    priorities = [5, 1, 10, 1, 5, 3]
    made = [submit(services, "demo.noop", priority=p) for p in priorities]
    work(settings, redis)
    done = [load(services, r.id) for r in made]
    # pops fill the free threads strictly by priority: the two p1 runs go first, p10 last
    by_start = sorted(range(len(made)), key=lambda i: done[i].started_at)
    assert {priorities[i] for i in by_start[:2]} == {1}
    assert priorities[by_start[-1]] == 10


def test_progress_and_log_from_threads(services, test_settings, redis):
    made = [submit(services, "tests.chatty") for _ in range(10)]
    work(test_settings, redis)
    for run in made:
        assert types(services, run.id) == [
            "run.queued",
            "run.started",
            "run.log",
            "run.progress",
            "run.succeeded",
        ]


def test_timeouts_in_threads_end_only_their_attempts(services, test_settings, redis):
    waiting = submit(services, "demo.sleep", {"seconds": 10}, timeout_s=0.3)  # in ctx.wait
    spinning = submit(services, "tests.stubborn", {"seconds": 10}, timeout_s=0.3)  # own code
    reporting = submit(services, "tests.reporter", {"seconds": 10}, timeout_s=0.3)  # db calls
    fine = [submit(services, "demo.sleep", {"seconds": 0.5}) for _ in range(3)]
    work_until(test_settings, redis, terminal(services, waiting.id, spinning.id, reporting.id))
    for run in (waiting, spinning, reporting):
        done = load(services, run.id)
        assert done.status is RunStatus.FAILED and done.error["type"] == "Timeout", done.error
        assert (done.finished_at - done.started_at).total_seconds() < 1.5
        assert last_type(services, run.id) == "run.failed"
    work(test_settings, redis)
    assert all(load(services, r.id).status is RunStatus.SUCCEEDED for r in fine)


def test_timeout_retried_in_a_thread(services, test_settings, redis):
    run = submit(services, "demo.sleep", {"seconds": 5}, timeout_s=0.2, max_attempts=2)
    work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.attempt == 2
    assert types(services, run.id).count("run.retrying") == 1


def test_cancel_of_an_attempt_in_a_thread_noticed_within_a_second(services, test_settings, redis):
    run = submit(services, "demo.sleep", {"seconds": 20})
    others = [submit(services, "demo.sleep", {"seconds": 1}) for _ in range(3)]
    cancel_soon(services, run.id)
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.CANCELLED
    assert types(services, run.id)[-1] == "run.cancelled"
    assert cancelled_after(services, run.id) < 1.0
    assert all(load(services, r.id).status is RunStatus.SUCCEEDED for r in others)


def test_cancel_ignored_in_a_thread_is_stopped_hard_after_grace(services, test_settings, redis):
    stubborn = submit(services, "tests.stubborn", {"seconds": 30})
    reporting = submit(services, "tests.reporter", {"seconds": 30})
    cancel_soon(services, stubborn.id)
    cancel_soon(services, reporting.id)
    work(test_settings, redis)
    grace = test_settings.cancel_grace_seconds
    for run in (stubborn, reporting):
        assert load(services, run.id).status is RunStatus.CANCELLED
        assert last_type(services, run.id) == "run.cancelled"
    assert grace <= cancelled_after(services, stubborn.id) < grace + 1.0
    # the reporter notices the cancel from its own progress call and is stopped after the grace
    assert cancelled_after(services, reporting.id) < grace + 1.0


def test_slow_attempts_in_threads_keep_their_leases(services, test_settings, redis):
    # lease 3 s, heartbeat 0.5 s (the settings fixture): 4 s attempts outlive their first lease
    made = [submit(services, "demo.sleep", {"seconds": 4}) for _ in range(3)]
    with base.SchedulerThread(services):
        work(test_settings, redis)
    for run in made:
        assert load(services, run.id).status is RunStatus.SUCCEEDED
        assert "run.stalled" not in types(services, run.id)
