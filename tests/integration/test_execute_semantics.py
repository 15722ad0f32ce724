"""BullMQ-style semantics in process: attempts and backoff, timeouts, priorities, delays,
cancellation, pause/resume and stalls."""

from __future__ import annotations

import threading
import time

from app import attempts, dispatch, runs
from app.db import q
from app.domain import RunStatus
from tests.helpers import wait_for
from tests.integration import test_execute as base
from tests.integration.test_execute import (
    TENANT,
    SchedulerThread,
    events,
    load,
    submit,
    terminal,
    types,
    work,
    work_until,
)

services = base.services  # a fixture
test_settings = base.test_settings  # a fixture


def started_gaps(services, run_id: str) -> list[float]:
    starts = [e.at for e in events(services, run_id) if e.type.value == "run.started"]
    return [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]


def test_retries_with_fixed_backoff(services, test_settings, redis):
    run = submit(
        services,
        "demo.fail",
        {"times": 2},
        max_attempts=3,
        backoff={"type": "fixed", "delay_ms": 300},
    )
    with SchedulerThread(services):
        work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    assert done.status is RunStatus.SUCCEEDED and done.result == {"attempt": 3}
    gaps = started_gaps(services, run.id)
    assert len(gaps) == 2
    assert all(0.3 <= gap < 0.3 + 0.5 for gap in gaps), gaps
    retrying = [e.data for e in events(services, run.id) if e.type.value == "run.retrying"]
    assert [r["attempt"] for r in retrying] == [1, 2]
    assert all(r["delay_ms"] == 300 and r["error"]["type"] == "DemoFailure" for r in retrying)


def test_retries_with_exponential_backoff(services, test_settings, redis):
    run = submit(
        services,
        "demo.fail",
        {"times": 3},
        max_attempts=4,
        backoff={"type": "exponential", "delay_ms": 200},
    )
    with SchedulerThread(services):
        work_until(test_settings, redis, terminal(services, run.id))
    assert load(services, run.id).status is RunStatus.SUCCEEDED
    gaps = started_gaps(services, run.id)
    expected = [0.2, 0.4, 0.8]
    assert all(want <= gap < want + 0.5 for gap, want in zip(gaps, expected, strict=True)), gaps


def test_exhausted_attempts_fail_with_the_last_error(services, test_settings, redis):
    run = submit(services, "demo.fail", {"times": 5}, max_attempts=2)
    work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.attempt == 2
    assert done.error == {"type": "DemoFailure", "message": "attempt 2 of 5 failing attempts"}
    assert types(services, run.id)[-1] == "run.failed"


def test_a_manual_retry_gives_a_fresh_budget_and_keeps_counting(services, test_settings, redis):
    backoff = {"type": "exponential", "delay_ms": 100}
    run = submit(services, "demo.fail", {"times": 3}, max_attempts=2, backoff=backoff)
    with SchedulerThread(services):
        work_until(test_settings, redis, terminal(services, run.id))
    assert load(services, run.id).attempt == 2
    with services.pool.connection() as conn:
        retried = runs.retry_run(conn, TENANT, run.id)
    dispatch.enqueue(services.redis, services.keys, [retried])
    with SchedulerThread(services):
        work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    # attempt 3 failed, attempt 4 (the second of the new budget of 2) passed demo.fail's 3
    assert done.status is RunStatus.SUCCEEDED and done.result == {"attempt": 4}
    retrying = [e.data for e in events(services, run.id) if e.type.value == "run.retrying"]
    # the new budget's backoff starts again from its first attempt: d * 2^0
    assert [(r["attempt"], r["delay_ms"]) for r in retrying] == [(1, 100), (3, 100)]


def test_unrecoverable_fails_at_once(services, test_settings, redis):
    run = submit(services, "demo.fail", {"times": 5, "unrecoverable": True}, max_attempts=5)
    work(test_settings, redis)
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.attempt == 1
    assert done.error["type"] == "Unrecoverable"


def test_timeout_fails_the_attempt_with_timeout(services, test_settings, redis):
    run = submit(services, "tests.stubborn", {"seconds": 10}, timeout_s=0.3)
    began = time.monotonic()
    work(test_settings, redis)
    assert time.monotonic() - began < 3
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.error["type"] == "Timeout"


def test_timeout_interrupts_a_task_blocked_in_a_long_c_call(services, test_settings, redis):
    run = submit(services, "tests.blocked", {"seconds": 10}, timeout_s=0.3)
    began = time.monotonic()
    work(test_settings, redis)
    assert time.monotonic() - began < 3  # the signal ends time.sleep(10) itself
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.error["type"] == "Timeout"


def test_timeout_is_retried_when_attempts_remain(services, test_settings, redis):
    run = submit(services, "demo.sleep", {"seconds": 5}, timeout_s=0.2, max_attempts=2)
    work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.attempt == 2
    assert types(services, run.id).count("run.retrying") == 1


def test_priority_order_and_fifo_within_one(services, test_settings, redis):
    priorities = [5, 1, 10, 1, 5, 3, 10, 3, 1, 5]
    made = [submit(services, "demo.noop", priority=p) for p in priorities]
    work(test_settings, redis)
    done = [load(services, r.id) for r in made]
    by_start = [r.id for r in sorted(done, key=lambda r: r.started_at)]
    order = sorted(range(len(made)), key=lambda i: (priorities[i], i))
    expected = [made[i].id for i in order]
    assert by_start == expected


def test_delayed_run_never_starts_early(services, test_settings, redis):
    run = submit(services, "demo.noop", delay_ms=600)
    assert load(services, run.id).status is RunStatus.DELAYED
    with SchedulerThread(services):
        work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    lateness = (done.started_at - done.scheduled_for).total_seconds()
    assert 0 <= lateness < 0.6, lateness
    assert types(services, run.id)[:3] == ["run.delayed", "run.queued", "run.started"]


def test_cancel_queued_run_never_starts(services, test_settings, redis):
    run = submit(services, "demo.noop")
    with services.pool.connection() as conn:
        runs.request_cancel(conn, TENANT, run.id)
    work(test_settings, redis)
    assert types(services, run.id) == ["run.queued", "run.cancelled"]


def cancel_soon(services, run_id: str) -> threading.Thread:
    """Cancel the run as the web does, once it runs; from a thread (the worker owns main)."""

    def cancel() -> None:
        wait_for(lambda: load(services, run_id).status is RunStatus.RUNNING, 10)
        with services.pool.connection() as conn:
            run = runs.request_cancel(conn, TENANT, run_id)
        services.redis.set(services.keys.cancel(run_id, run.attempt), 1, ex=60)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def cancelled_after(services, run_id: str) -> float:
    run = load(services, run_id)
    with services.pool.connection() as conn:
        row = conn.execute(
            "SELECT cancel_requested_at FROM runs WHERE id = %s", (run_id,)
        ).fetchone()
    return (run.finished_at - row["cancel_requested_at"]).total_seconds()


def test_cancel_running_run_noticed_within_a_second(services, test_settings, redis):
    run = submit(services, "demo.sleep", {"seconds": 20})
    cancel_soon(services, run.id)
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.CANCELLED
    assert types(services, run.id)[-1] == "run.cancelled"
    assert cancelled_after(services, run.id) < 1.0


def test_cancel_ignored_is_stopped_hard_after_grace(services, test_settings, redis):
    run = submit(services, "tests.stubborn", {"seconds": 30})
    cancel_soon(services, run.id)
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.CANCELLED
    grace = test_settings.cancel_grace_seconds
    assert grace <= cancelled_after(services, run.id) < grace + 1.0


def test_cancel_ignored_in_a_long_c_call_is_stopped_hard_after_grace(
    services, test_settings, redis
):
    run = submit(services, "tests.blocked", {"seconds": 30})
    cancel_soon(services, run.id)
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.CANCELLED
    grace = test_settings.cancel_grace_seconds
    assert grace <= cancelled_after(services, run.id) < grace + 1.0


def test_pause_keeps_runs_queued_and_resume_runs_them(services, test_settings, redis):
    with services.pool.connection() as conn:
        conn.execute(q("pause_queue"), {"tenant": TENANT, "queue": "default"})
    run = submit(services, "demo.noop")
    other = submit(services, "demo.noop", tenant="beta")  # another tenant is not paused
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.QUEUED
    assert types(services, run.id) == ["run.queued"]
    with services.pool.connection() as conn:
        assert runs.get_run(conn, "beta", other.id).status is RunStatus.SUCCEEDED
        conn.execute(q("resume_queue"), {"tenant": TENANT, "queue": "default"})
        queued = [
            runs.Run.from_row(r)
            for r in conn.execute(q("queued_in_queue"), {"tenant": TENANT, "queue": "default"})
        ]
    dispatch.enqueue(services.redis, services.keys, queued)
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.SUCCEEDED


def test_stalled_attempt_requeued_without_spending_an_attempt_then_fails(
    services, test_settings, redis
):
    run = submit(services, "demo.noop", max_attempts=1)
    scheduler = SchedulerThread(services).scheduler
    for _ in range(2):  # a worker claims it and dies: its lease is never renewed
        redis.delete(*redis.keys(f"rq:queue:{test_settings.prefix}*"))
        with services.pool.connection() as conn:
            assert attempts.group_commit(
                conn, [attempts.claim_change(run.id, worker="dead", lease_s=0.2)]
            )[0]

        def recovered() -> bool:
            scheduler.tick()
            return load(services, run.id).status is not RunStatus.RUNNING

        wait_for(recovered, 5, message="stall recovery")
        if load(services, run.id).status is RunStatus.QUEUED:
            assert load(services, run.id).attempt == 0
            assert redis.exists(f"rq:job:{run.id}")  # enqueued again
    done = load(services, run.id)
    assert done.status is RunStatus.FAILED and done.error["type"] == "Stalled"
    assert types(services, run.id).count("run.stalled") == 2


def test_stalled_run_recovered_then_succeeds(services, test_settings, redis):
    run = submit(services, "demo.noop")
    redis.delete(*redis.keys(f"rq:queue:{test_settings.prefix}*"))
    with services.pool.connection() as conn:
        attempts.group_commit(conn, [attempts.claim_change(run.id, worker="dead", lease_s=0.2)])
    with SchedulerThread(services):
        work_until(test_settings, redis, terminal(services, run.id))
    done = load(services, run.id)
    assert done.status is RunStatus.SUCCEEDED and done.attempt == 1
    assert types(services, run.id) == [
        "run.queued",
        "run.started",
        "run.stalled",
        "run.started",
        "run.succeeded",
    ]


def test_slow_but_alive_attempt_is_never_stalled(services, test_settings, redis):
    # lease 3 s, heartbeat 0.5 s (the settings fixture): a 4 s attempt outlives its first lease
    run = submit(services, "demo.sleep", {"seconds": 4})
    with SchedulerThread(services):
        work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.SUCCEEDED
    assert "run.stalled" not in types(services, run.id)
