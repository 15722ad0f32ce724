"""The run state machine: every state change is one named function (an attempt's, one named
Change, which workers commit in groups), one statement with its event (the outbox).

Each function takes a connection (autocommit: each statement is its own transaction) and runs
queries of app/sql/queries/runs.sql. Guards in the queries make stale or duplicate calls no-ops.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from app.db import jsonb, q
from app.domain import Event, Run, RunStatus

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
    # the W3C traceparent its attempts' spans continue (app.observability.tracing); one per
    # request, so a flow's or a batch's runs all carry the same
    traceparent: str | None = None


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
            "traceparent": new.traceparent,
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
    row = conn.execute(q("get_run"), {"id": run_uuid(run_id), "tenant": tenant}).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return Run.from_row(row)


def tenant_run_ids(conn: Conn, tenant: str, run_ids: list[str]) -> set[str]:
    """The ids among `run_ids` of runs the tenant has."""
    rows = conn.execute(
        q("tenant_run_ids"), {"tenant": tenant, "ids": [run_uuid(i) for i in run_ids]}
    ).fetchall()
    return {str(row["id"]) for row in rows}


def load_run(conn: Conn, run_id: str) -> Run | None:
    """A run by id whatever its tenant: for workers, which act on ids Postgres gave out."""
    row = conn.execute(q("get_run_any_tenant"), {"id": run_uuid(run_id)}).fetchone()
    return Run.from_row(row) if row else None


def list_runs(
    conn: Conn,
    tenant: str,
    *,
    status: str | None = None,
    queue: str | None = None,
    task: str | None = None,
    parent_id: str | None = None,
    idempotency_key: str | None = None,
    dedupe_key: str | None = None,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
) -> list[Run]:
    params: dict[str, Any] = {
        "tenant": tenant,
        "status": status,
        "queue": queue,
        "task": task,
        "parent_id": run_uuid(parent_id) if parent_id else None,
        "idempotency_key": idempotency_key,
        "dedupe_key": dedupe_key,
        "limit": limit,
        "before_created": before[0] if before else None,
        "before_id": before[1] if before else None,
    }
    only_queue_status = (queue or status) and not (
        task or parent_id or idempotency_key or dedupe_key
    )
    name = "list_runs_by_queue_status" if only_queue_status else "list_runs"
    params["statuses"] = [status] if status else [s.value for s in RunStatus]
    # Never prepared: a prepared statement may switch to one generic plan for every combination
    # of filters, which cannot drop the filters not given and so reads no filter's index.
    rows = conn.execute(q(name), params, prepare=False).fetchall()
    return [Run.from_row(row) for row in rows]


def list_events(conn: Conn, run_id: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
    rows = conn.execute(
        q("list_events"), {"run_id": run_uuid(run_id), "after": after, "limit": limit}
    ).fetchall()
    return [Event.from_row(row) for row in rows]


def request_cancel(conn: Conn, tenant: str, run_id: str, reason: str = "cancelled") -> Run:
    """Cancel a waiting run at once, or ask a running attempt to stop; 409 for a finished run."""
    params = {"id": run_uuid(run_id), "tenant": tenant, "reason": reason}
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
    row = conn.execute(q("retry_run"), {"id": run_uuid(run_id), "tenant": tenant}).fetchone()
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


def queued_to_dispatch(conn: Conn, *, older_than_s: float, limit: int = 1000) -> list[Run]:
    rows = conn.execute(q("queued_to_dispatch"), {"older_than_s": older_than_s, "limit": limit})
    return [Run.from_row(row) for row in rows]


def mark_dispatched(conn: Conn, run_ids: list[str]) -> None:
    conn.execute(q("mark_dispatched"), {"ids": [run_uuid(r) for r in run_ids]})


def run_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise RunNotFound(value) from exc
