"""The run state machine against real Postgres: every change commits with exactly one event."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from app import attempts, db, runs
from app.domain import RunStatus, rfc3339


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(database_url) as connection:
        yield connection


def new_run(**overrides: Any) -> runs.NewRun:
    fields: dict[str, Any] = {
        "tenant": "alpha",
        "task": "demo.echo",
        "queue": "default",
        "input": {"n": 1},
        "priority": 5,
        "max_attempts": 2,
        "backoff": None,
        "timeout_s": None,
        "metadata": {},
        "scheduled_for": None,
    }
    return runs.NewRun(**{**fields, **overrides})


def commit(conn: psycopg.Connection[Any], change: attempts.Change) -> runs.Run | None:
    """One change of an attempt, committed as a worker commits a group of them."""
    [done] = attempts.group_commit(conn, [change])
    return done


def event_types(conn: psycopg.Connection[Any], run_id: str) -> list[str]:
    return [event.type.value for event in runs.list_events(conn, run_id)]


def test_create_then_same_key_returns_the_first_run(conn: psycopg.Connection[Any]) -> None:
    first, created = runs.create_run(conn, new_run(idempotency_key="k", request_fingerprint="f"))
    again, created_again = runs.create_run(conn, new_run(idempotency_key="k"))

    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert first.status is RunStatus.QUEUED and first.last_seq == 1
    assert first.scheduled_for == first.created_at
    assert event_types(conn, first.id) == ["run.queued"]


def test_the_same_key_in_another_tenant_is_another_run(conn: psycopg.Connection[Any]) -> None:
    a, _ = runs.create_run(conn, new_run(idempotency_key="k"))
    b, created = runs.create_run(conn, new_run(tenant="beta", idempotency_key="k"))
    assert created and a.id != b.id


def test_a_duplicate_claim_is_a_no_op(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run())
    claimed = commit(conn, attempts.claim_change(run.id, worker="w1", lease_s=10))

    assert claimed is not None and claimed.attempt == 1 and claimed.status is RunStatus.RUNNING
    assert commit(conn, attempts.claim_change(run.id, worker="w2", lease_s=10)) is None
    assert event_types(conn, run.id) == ["run.queued", "run.started"]


def test_concurrent_claims_start_one_attempt(database_url: str, conn: Any) -> None:
    run, _ = runs.create_run(conn, new_run())
    results: list[Any] = []

    def claim(name: str) -> None:
        with db.connect(database_url) as own:
            results.append(commit(own, attempts.claim_change(run.id, worker=name, lease_s=10)))

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result is not None for result in results) == 1
    assert event_types(conn, run.id) == ["run.queued", "run.started"]


def test_retry_then_success_numbers_events_without_gaps(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run())
    first = commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10))
    assert first is not None
    attempts.record_progress(conn, first, 50, "half")
    retried = commit(conn, attempts.retry_change(first, {"type": "ValueError", "message": "x"}, 0))
    assert retried is not None and retried.status is RunStatus.QUEUED
    second = commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10))
    assert second is not None and second.attempt == 2
    done = commit(conn, attempts.finish_change(second, {"ok": True}))

    assert done is not None and done.status is RunStatus.SUCCEEDED and done.result == {"ok": True}
    events = runs.list_events(conn, run.id)
    assert [e.type.value for e in events] == [
        "run.queued",
        "run.started",
        "run.progress",
        "run.retrying",
        "run.started",
        "run.succeeded",
    ]
    assert [e.seq for e in events] == list(range(1, 7)) and done.last_seq == 6


def test_a_stale_attempt_cannot_finish_a_newer_one(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run())
    first = commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10))
    assert first is not None
    commit(conn, attempts.retry_change(first, {"type": "E", "message": ""}, 0))
    assert commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10)) is not None

    assert commit(conn, attempts.finish_change(first, "late")) is None
    assert runs.get_run(conn, "alpha", run.id).status is RunStatus.RUNNING


def test_cancel_waiting_run_at_once_and_terminal_conflicts(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run())
    cancelled = runs.request_cancel(conn, "alpha", run.id, "user asked")

    assert cancelled.status is RunStatus.CANCELLED
    assert runs.list_events(conn, run.id)[-1].data == {"reason": "user asked"}
    with pytest.raises(runs.RunConflict):
        runs.request_cancel(conn, "alpha", run.id)


def test_cancel_of_a_running_attempt_waits_for_the_worker(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run())
    attempt = commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10))
    assert attempt is not None

    still_running = runs.request_cancel(conn, "alpha", run.id)
    assert still_running.status is RunStatus.RUNNING
    assert attempts.renew_leases(conn, [run.id], worker="w", lease_s=10) == {run.id: True}
    assert commit(conn, attempts.finish_change(attempt, "done anyway")) is None
    ended = commit(conn, attempts.cancel_change(attempt))
    assert ended is not None and ended.status is RunStatus.CANCELLED


def test_a_released_attempt_is_queued_again_without_spending_an_attempt(
    conn: psycopg.Connection[Any],
) -> None:
    run, _ = runs.create_run(conn, new_run())
    claimed = commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10))
    assert claimed is not None

    released = commit(conn, attempts.release_change(claimed))
    assert released is not None and released.status is RunStatus.QUEUED
    assert (released.attempt, released.started_at, released.last_seq) == (0, None, 3)
    assert commit(conn, attempts.finish_change(claimed, "late")) is None  # its attempt is gone
    assert event_types(conn, run.id) == ["run.queued", "run.started", "run.queued"]


def test_several_changes_commit_together_each_with_its_event(
    conn: psycopg.Connection[Any],
) -> None:
    a, _ = runs.create_run(conn, new_run())
    b, _ = runs.create_run(conn, new_run())
    claims = [attempts.claim_change(r.id, worker="w", lease_s=10) for r in (a, b, a)]

    first, second, duplicate = attempts.group_commit(conn, claims)
    assert first is not None and second is not None and duplicate is None
    assert attempts.record_log(conn, first, "hello", "info") is False
    done = attempts.group_commit(
        conn,
        [
            attempts.finish_change(first, 1),
            attempts.fail_change(second, {"type": "E", "message": ""}),
        ],
    )
    assert [r.status if r else None for r in done] == [RunStatus.SUCCEEDED, RunStatus.FAILED]
    assert event_types(conn, a.id) == ["run.queued", "run.started", "run.log", "run.succeeded"]
    assert event_types(conn, b.id) == ["run.queued", "run.started", "run.failed"]


def test_a_batch_of_claims_and_finishes_answers_each_change_in_its_place(
    conn: psycopg.Connection[Any],
) -> None:
    made = [runs.create_run(conn, new_run())[0] for _ in range(6)]
    order = [made[i] for i in (4, 1, 5, 0, 3, 2)]  # not the order of the ids or of creation
    claimed = attempts.group_commit(
        conn, [attempts.claim_change(r.id, worker="w", lease_s=9) for r in order]
    )
    assert [r.id if r else None for r in claimed] == [r.id for r in order]
    started = [r.started_at for r in claimed if r]
    assert started == sorted(started) and len(set(started)) == 6, "started_at follows the list"
    first, second, third, *rest = (r for r in claimed if r)
    stale = attempts.finish_change(replace(third, attempt=7), "never")
    changes = [
        attempts.finish_change(first, {"n": 1}),
        stale,
        attempts.fail_change(second, {"type": "E", "message": "x"}),
        attempts.finish_change(third, [3]),
        *(attempts.finish_change(r, i) for i, r in enumerate(rest)),
    ]
    done = attempts.group_commit(conn, changes)
    assert [(r.id, r.status, r.result) if r else None for r in done] == [
        (first.id, RunStatus.SUCCEEDED, {"n": 1}),
        None,
        (second.id, RunStatus.FAILED, None),
        (third.id, RunStatus.SUCCEEDED, [3]),
        *((r.id, RunStatus.SUCCEEDED, i) for i, r in enumerate(rest)),
    ]
    assert event_types(conn, third.id) == ["run.queued", "run.started", "run.succeeded"]


def test_other_tenants_runs_do_not_exist(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run())
    with pytest.raises(runs.RunNotFound):
        runs.get_run(conn, "beta", run.id)
    with pytest.raises(runs.RunNotFound):
        runs.request_cancel(conn, "beta", run.id)
    with pytest.raises(runs.RunNotFound):
        runs.get_run(conn, "alpha", "not-a-uuid")


def test_manual_retry_only_from_failed_or_cancelled(conn: psycopg.Connection[Any]) -> None:
    run, _ = runs.create_run(conn, new_run(max_attempts=1))
    with pytest.raises(runs.RunConflict):
        runs.retry_run(conn, "alpha", run.id)
    attempt = commit(conn, attempts.claim_change(run.id, worker="w", lease_s=10))
    assert attempt is not None
    commit(conn, attempts.fail_change(attempt, {"type": "E", "message": "boom"}))

    again = runs.retry_run(conn, "alpha", run.id)
    assert again.status is RunStatus.QUEUED and again.error is None
    # attempts go on being counted; the fresh budget starts after the one already spent
    assert (again.attempt, again.attempt_base, again.budget_attempt) == (1, 1, 0)


def test_delayed_runs_are_promoted_only_when_due(conn: psycopg.Connection[Any]) -> None:
    later, _ = runs.create_run(conn, new_run(delayed=True, scheduled_for=_in(3600)))
    due, _ = runs.create_run(conn, new_run(delayed=True, scheduled_for=_in(-1)))

    promoted = runs.promote_due(conn)
    assert [r.id for r in promoted] == [due.id]
    assert runs.get_run(conn, "alpha", later.id).status is RunStatus.DELAYED
    assert event_types(conn, due.id) == ["run.delayed", "run.queued"]


def test_delayed_event_names_its_time_in_rfc3339_utc(conn: psycopg.Connection[Any]) -> None:
    when = _in(60)
    run, _ = runs.create_run(conn, new_run(delayed=True, scheduled_for=when))

    [event] = runs.list_events(conn, run.id)
    assert event.type.value == "run.delayed"
    assert event.data == {"until": rfc3339(run.scheduled_for)}
    assert event.data["until"].endswith("Z") and run.scheduled_for == when


def test_first_stall_requeues_without_spending_an_attempt_second_fails(
    conn: psycopg.Connection[Any],
) -> None:
    run, _ = runs.create_run(conn, new_run())
    assert commit(conn, attempts.claim_change(run.id, worker="w", lease_s=0)) is not None

    [requeued] = attempts.recover_stalled(conn)[0]
    assert requeued.status is RunStatus.QUEUED and requeued.attempt == 0
    assert commit(conn, attempts.claim_change(run.id, worker="w", lease_s=0)) is not None
    [failed] = attempts.recover_stalled(conn)[0]

    assert failed.status is RunStatus.FAILED and failed.error == {
        "type": "Stalled",
        "message": "the attempt's worker stopped responding",
    }
    assert event_types(conn, run.id) == [
        "run.queued",
        "run.started",
        "run.stalled",
        "run.started",
        "run.stalled",
        "run.failed",
    ]


def _in(seconds: float) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_batch_claim_looks_its_runs_up_by_primary_key_with_stale_statistics(
    conn: psycopg.Connection[Any],
) -> None:
    """Runs just queued in bulk (statistics not yet analysed) must not turn a batch claim into a
    scan of the whole table, once for each run of the batch."""
    conn.execute(
        "INSERT INTO runs (id, tenant, task, queue, status, dispatched_at)"
        " SELECT gen_random_uuid(), 'alpha', 'demo.echo', 'default', 'queued', now()"
        " FROM generate_series(1, 3000)"
    )
    ids = [row["id"] for row in conn.execute("SELECT id FROM runs LIMIT 128").fetchall()]
    params = {"ids": ids, "worker": "w1", "lease_s": 30}
    plan = [row["QUERY PLAN"] for row in conn.execute("EXPLAIN " + db.q("claim_attempt"), params)]
    assert any("runs_pkey" in line for line in plan), plan
    assert not any("Seq Scan on runs" in line for line in plan), plan
    started = conn.execute(db.q("claim_attempt"), params).fetchall()
    assert len(started) == 128
