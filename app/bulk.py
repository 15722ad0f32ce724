"""Bulk cancel and retry (contract §2): the single-run rules (runs.request_cancel, flows.retry)
applied to every run of a tenant that a selection names, set-based: one statement per kind of
change over the whole list, whatever its size, each with its events (the outbox).

A run the rule does not apply to (a cancel of a finished run, a retry of a live one) is left as
it is: it counts as matched, not changed. Only the runs selected count; what the rule changes
beyond them (a cancelled parent's children, a retried parent's failed children) does not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from app.db import q
from app.domain import Run, RunStatus
from app.flows import RETRYABLE
from app.runs import Conn

CANCELLABLE = (RunStatus.WAITING, RunStatus.QUEUED, RunStatus.DELAYED, RunStatus.RUNNING)
TRIES = 3  # a change a deadlock rolled back is made again, up to this many times in all


@dataclass(frozen=True)
class Selection:
    """Which of a tenant's runs: these ids (None: any), of this status, queue and task (None:
    any). Nothing given: every run of the tenant."""

    ids: list[str] | None = None
    status: RunStatus | None = None
    queue: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class Outcome:
    matched: int  # the runs selected
    changed: list[Run] = field(default_factory=list)  # those of them the rule changed
    enqueue: list[Run] = field(default_factory=list)  # runs queued, for RQ (children too)
    stop: list[Run] = field(default_factory=list)  # running attempts asked to stop


def cancel(conn: Conn, tenant: str, selection: Selection) -> Outcome:
    """Cancel the selected waiting, queued and delayed runs at once; ask the running ones to
    stop (their workers end them cancelled). The caller settles the flows of the runs changed
    (app.flows.after_change: a cancelled parent's children) and sets the stop flags."""
    return _in_one_transaction(conn, lambda: _cancel(conn, tenant, selection))


def _cancel(conn: Conn, tenant: str, selection: Selection) -> Outcome:
    found = _match(conn, tenant, selection, CANCELLABLE)
    params = {"ids": found["plain"] + found["parents"], "tenant": tenant}
    cancelled = _runs(conn, "cancel_runs", params)
    stopping = _runs(conn, "request_cancel_runs", params)
    return Outcome(found["matched"], cancelled + stopping, stop=stopping)


def retry(conn: Conn, tenant: str, selection: Selection) -> Outcome:
    """Retry the selected failed and cancelled runs: queued with a fresh budget; a parent's
    failed and cancelled children (and theirs, from the bottom up) first, and it waits for them,
    or runs again alone when they all succeeded (app.flows.retry's rule)."""
    return _in_one_transaction(conn, lambda: _retry(conn, tenant, selection))


def _retry(conn: Conn, tenant: str, selection: Selection) -> Outcome:
    found = _match(conn, tenant, selection, RETRYABLE)
    plain = _runs(conn, "retry_runs", {"ids": found["plain"], "tenant": tenant})
    parents: list[Run] = []
    children: list[Run] = []
    if found["parents"]:
        levels = conn.execute(q("retry_levels"), {"ids": found["parents"]}).fetchall()
        for level in levels:  # deepest first: a parent after its children
            ids = {"ids": level["ids"], "tenant": tenant}
            children += _runs(conn, "retry_children_of", ids)
            parents += _runs(conn, "retry_parents", ids)
    selected = {uuid.UUID(run.id) for run in plain} | set(found["parents"])
    retried = plain + [run for run in parents if uuid.UUID(run.id) in selected]
    queued = [run for run in plain + children + parents if run.status is RunStatus.QUEUED]
    return Outcome(found["matched"], retried, enqueue=queued)


def _in_one_transaction(conn: Conn, change: Callable[[], Outcome]) -> Outcome:
    """The match and the changes commit together. Their statements lock many rows in no set
    order, beside workers' group commits locking theirs: a deadlock, which Postgres breaks by
    rolling one side back, rolls back the whole change, so it is made again from the match."""
    for _ in range(TRIES - 1):
        try:
            with conn.transaction():
                return change()
        except psycopg.errors.DeadlockDetected:
            continue
    with conn.transaction():
        return change()


def _match(
    conn: Conn, tenant: str, selection: Selection, eligible: tuple[RunStatus, ...]
) -> dict[str, Any]:
    params = {
        "tenant": tenant,
        "ids": None if selection.ids is None else [uuid.UUID(i) for i in selection.ids],
        "status": selection.status.value if selection.status else None,
        "queue": selection.queue,
        "task": selection.task,
        "eligible": [status.value for status in eligible],
    }
    row: dict[str, Any] | None = conn.execute(q("bulk_match"), params).fetchone()
    assert row is not None  # an aggregate always has its row
    return row


def _runs(conn: Conn, query: str, params: dict[str, Any]) -> list[Run]:
    if not params["ids"]:
        return []
    return [Run.from_row(row) for row in conn.execute(q(query), params)]
