"""The run state machine: every state change is one named function (an attempt's, one named
Change, which workers commit in groups), one statement with its event (the outbox).

Each function takes a connection (autocommit: each statement is its own transaction) and runs
queries of app/sql/queries/runs.sql. Guards in the queries make stale or duplicate calls no-ops.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from app.db import jsonb, q
from app.domain import Event, Run

Conn = psycopg.Connection[Any]


class RunNotFound(LookupError):
    """No such run for this tenant (another tenant's run does not exist for the caller)."""


class RunConflict(Exception):
    """The run's state does not allow the requested change."""

    def __init__(self, run: Run, detail: str) -> None:
        super().__init__(detail)
        self.run = run
        self.detail = detail


@dataclass(frozen=True)
class NewRun:
    tenant: str
    task: str
    queue: str
    input: Any
    priority: int
    max_attempts: int
    backoff: dict[str, Any] | None
    timeout_s: float | None
    metadata: dict[str, Any]
    scheduled_for: datetime | None  # None or past: queued now
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    delayed: bool = False
    dedupe: Dedupe | None = None  # see app.dedupe
    limit_key: str | None = None  # what its queue's per-key limits count by (contract §5.1)


@dataclass(frozen=True)
class Dedupe:
    """A run's dedupe field (contract §5.3): at most one of ttl_s and debounce_ms."""

    key: str
    ttl_s: float | None = None
    debounce_ms: int | None = None


def create_run(conn: Conn, new: NewRun, *, run_id: uuid.UUID | None = None) -> tuple[Run, bool]:
    """Insert the run and its first event; (existing run, False) when the key was used before.
    A dedupe field is stored, not acted on: app.dedupe.create_run does that."""
    row = conn.execute(
        q("insert_run"),
        {
            "id": run_id or uuid.uuid4(),
            "tenant": new.tenant,
            "task": new.task,
            "queue": new.queue,
            "status": "delayed" if new.delayed else "queued",
            "input": jsonb(new.input),
            "max_attempts": new.max_attempts,
            "backoff": jsonb(new.backoff) if new.backoff is not None else None,
            "timeout_s": new.timeout_s,
            "priority": new.priority,
            "metadata": jsonb(new.metadata),
            "idempotency_key": new.idempotency_key,
            "request_fingerprint": new.request_fingerprint,
            "dedupe_key": new.dedupe.key if new.dedupe else None,
            "limit_key": new.limit_key,
            "scheduled_for": new.scheduled_for,
        },
    ).fetchone()
    if row is not None:
        return Run.from_row(row), True
    existing = run_by_idempotency_key(conn, new.tenant, str(new.idempotency_key))
    if existing is None:  # the conflicting row was deleted (retention) between the two statements
        return create_run(conn, new, run_id=run_id)
    return existing, False


def run_by_idempotency_key(conn: Conn, tenant: str, key: str) -> Run | None:
    row = conn.execute(q("run_by_idempotency_key"), {"tenant": tenant, "idempotency_key": key})
    found = row.fetchone()
    return Run.from_row(found) if found else None


def get_run(conn: Conn, tenant: str, run_id: str) -> Run:
    row = conn.execute(q("get_run"), {"id": _uuid(run_id), "tenant": tenant}).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return Run.from_row(row)


def load_run(conn: Conn, run_id: str) -> Run | None:
    """A run by id whatever its tenant: for workers, which act on ids Postgres gave out."""
    row = conn.execute(q("get_run_any_tenant"), {"id": _uuid(run_id)}).fetchone()
    return Run.from_row(row) if row else None


def list_runs(
    conn: Conn,
    tenant: str,
    *,
    status: str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
) -> list[Run]:
    rows = conn.execute(
        q("list_runs"),
        {
            "tenant": tenant,
            "status": status,
            "queue": queue,
            "task": task,
            "limit": limit,
            "before_created": before[0] if before else None,
            "before_id": before[1] if before else None,
        },
    ).fetchall()
    return [Run.from_row(row) for row in rows]


def list_events(conn: Conn, run_id: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
    rows = conn.execute(
        q("list_events"), {"run_id": _uuid(run_id), "after": after, "limit": limit}
    ).fetchall()
    return [Event.from_row(row) for row in rows]


def claimed_by_worker(conn: Conn, run_ids: list[str], worker: str) -> list[Run]:
    """Which of these runs are running an attempt of `worker`'s (claims whose reply was lost)."""
    rows = conn.execute(
        q("claimed_by_worker"), {"ids": [_uuid(r) for r in run_ids], "worker": worker}
    )
    return [Run.from_row(row) for row in rows]


def record_progress(conn: Conn, run: Run, percent: float, message: str) -> bool:
    """Store and emit progress; returns whether cancellation has been requested."""
    data = {"percent": percent, "message": message}
    row = conn.execute(
        q("record_progress"), {"id": _uuid(run.id), "attempt": run.attempt, "data": jsonb(data)}
    ).fetchone()
    return bool(row and row["cancel_requested_at"])


def record_log(conn: Conn, run: Run, message: str, level: str) -> bool:
    data = {"level": level, "message": message}
    row = conn.execute(
        q("record_log"), {"id": _uuid(run.id), "attempt": run.attempt, "data": jsonb(data)}
    ).fetchone()
    return bool(row and row["cancel_requested_at"])


def request_cancel(conn: Conn, tenant: str, run_id: str, reason: str = "cancelled") -> Run:
    """Cancel a waiting run at once, or ask a running attempt to stop; 409 for a finished run."""
    params = {"id": _uuid(run_id), "tenant": tenant, "reason": reason}
    row = conn.execute(q("cancel_waiting"), params).fetchone()
    if row is None:
        row = conn.execute(q("request_cancel_running"), params).fetchone()
    if row is not None:
        return Run.from_row(row)
    run = get_run(conn, tenant, run_id)
    if run.status.terminal:
        raise RunConflict(run, f"run is already {run.status.value}")
    # it moved between states while we looked (e.g. queued -> running): try once more
    return request_cancel(conn, tenant, run_id, reason)


def retry_run(conn: Conn, tenant: str, run_id: str) -> Run:
    row = conn.execute(q("retry_run"), {"id": _uuid(run_id), "tenant": tenant}).fetchone()
    if row is not None:
        return Run.from_row(row)
    run = get_run(conn, tenant, run_id)
    raise RunConflict(
        run, f"only failed or cancelled runs can be retried; run is {run.status.value}"
    )


def promote_due(conn: Conn, limit: int = 500) -> list[Run]:
    """Delayed runs whose time has come become queued."""
    return [Run.from_row(row) for row in conn.execute(q("promote_due"), {"limit": limit})]


def next_delayed_due(conn: Conn) -> datetime | None:
    row = conn.execute(q("next_delayed_due")).fetchone()
    return row["due"] if row else None


def renew_leases(conn: Conn, run_ids: list[str], *, worker: str, lease_s: float) -> dict[str, bool]:
    """Extend the leases of this worker's attempts; run id -> cancel requested."""
    rows = conn.execute(
        q("renew_leases"),
        {"ids": [_uuid(r) for r in run_ids], "worker": worker, "lease_s": lease_s},
    )
    return {str(row["id"]): row["cancel_requested_at"] is not None for row in rows}


def recover_stalled(conn: Conn, limit: int = 100) -> list[Run]:
    """Runs whose lease expired: requeued on a first stall, failed (or cancelled) on a second."""
    recovered = []
    with conn.transaction():
        for row in conn.execute(q("expired_leases"), {"limit": limit}).fetchall():
            run = Run.from_row(row)
            params = {"id": _uuid(run.id), "attempt": run.attempt}
            if row["cancel_requested_at"] is not None:
                conn.execute(q("stall_event"), params)
                done = conn.execute(q("cancel_running"), params).fetchone()
            elif row["stalls"] == 0:
                done = conn.execute(q("requeue_stalled"), params).fetchone()
            else:
                conn.execute(q("stall_event"), params)
                error = {"type": "Stalled", "message": "the attempt's worker stopped responding"}
                done = conn.execute(q("fail_attempt"), {**params, "error": jsonb(error)}).fetchone()
            if done is not None:
                recovered.append(Run.from_row(done))
    return recovered


def queued_to_dispatch(conn: Conn, *, older_than_s: float, limit: int = 1000) -> list[Run]:
    rows = conn.execute(q("queued_to_dispatch"), {"older_than_s": older_than_s, "limit": limit})
    return [Run.from_row(row) for row in rows]


def mark_dispatched(conn: Conn, run_ids: list[str]) -> None:
    conn.execute(q("mark_dispatched"), {"ids": [_uuid(r) for r in run_ids]})


# The changes of an attempt, which a worker commits in groups (group_commit). Each one's guard
# makes it a no-op (None) for a stale attempt.


@dataclass(frozen=True)
class Change:
    """One state change of this module (a runs.sql query and its parameters), for group_commit."""

    query: str
    params: dict[str, Any]


def claim_change(run_id: str, *, worker: str, lease_s: float) -> Change:
    """Start the next attempt; None when the run is no longer queued (fencing)."""
    return Change("claim_attempt", {"id": _uuid(run_id), "worker": worker, "lease_s": lease_s})


def finish_change(run: Run, result: Any) -> Change:
    """The attempt succeeded. None when its cancellation was requested (see cancel_change)."""
    return Change("finish_attempt", {**_attempt(run), "result": jsonb(result)})


def retry_change(run: Run, error: dict[str, str], delay_ms: int) -> Change:
    """The attempt failed with attempts left: delayed by `delay_ms` (queued when 0)."""
    return Change("retry_attempt", {**_attempt(run), "error": jsonb(error), "delay_ms": delay_ms})


def fail_change(run: Run, error: dict[str, str]) -> Change:
    return Change("fail_attempt", {**_attempt(run), "error": jsonb(error)})


def cancel_change(run: Run) -> Change:
    """The worker stopped an attempt whose cancellation was requested."""
    return Change("cancel_running", _attempt(run))


def release_change(run: Run) -> Change:
    """Hand back a claimed attempt that never started (its worker is stopping)."""
    return Change("release_attempt", _attempt(run))


def group_commit(conn: Conn, changes: list[Change]) -> list[Run | None]:
    """Several state changes in one transaction and one round trip (group commit).

    Each keeps its guard and its event; a worker uses this to pay one WAL flush for a batch.
    Consecutive claims, and consecutive finishes, go as one statement each (_BATCHED): the
    statement's overhead, not the row's, is most of a no-op job's cost.
    """
    if not changes:
        return []
    with conn.pipeline(), conn.transaction():
        sent = [(group, conn.execute(*_statement(group))) for group in _groups(changes)]
    done: list[Run | None] = []
    for group, cur in sent:
        # a run listed twice (a duplicate delivery) changes once: its first place gets the run
        by_id = {run.id: run for run in map(Run.from_row, cur.fetchall())}
        done += [by_id.pop(str(change.params["id"]), None) for change in group]
    return done


# The queries that take lists, one change's parameters each, and how to merge them.
_BATCHED: dict[str, Callable[[list[dict[str, Any]]], dict[str, Any]]] = {
    "claim_attempt": lambda ps: {**ps[0], "ids": [p["id"] for p in ps]},  # one worker and lease
    "finish_attempt": lambda ps: {
        "ids": [p["id"] for p in ps],
        "attempts": [p["attempt"] for p in ps],
        "results": [p["result"] for p in ps],
    },
}


def _groups(changes: list[Change]) -> Iterator[list[Change]]:
    """The changes in order, runs of batchable ones of one kind (and one worker and lease,
    for claims) together; each other change alone."""
    group: list[Change] = []
    for change in changes:
        if group and (change.query not in _BATCHED or not _same_batch(group[0], change)):
            yield group
            group = []
        group.append(change)
    if group:
        yield group


def _same_batch(first: Change, change: Change) -> bool:
    if first.query != change.query:
        return False
    shared = ("worker", "lease_s") if change.query == "claim_attempt" else ()
    return all(first.params[k] == change.params[k] for k in shared)


def _statement(group: list[Change]) -> tuple[str, dict[str, Any]]:
    query = group[0].query
    merge = _BATCHED.get(query)
    return q(query), merge([c.params for c in group]) if merge else group[0].params


def _attempt(run: Run) -> dict[str, Any]:
    return {"id": _uuid(run.id), "attempt": run.attempt}


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise RunNotFound(value) from exc
