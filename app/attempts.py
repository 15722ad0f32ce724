"""An attempt's state changes: its claim, its progress and log lines, its lease, its outcome and
its recovery when its worker stalls. Workers commit the claims and outcomes of many attempts in
one transaction (commit: group commit), each change still guarded and with its event (the
outbox); the transaction that ends attempts also releases what queue limits held back for the
slots they freed.

Each function takes a connection and runs queries of app/sql/queries/runs.sql; guards in the
queries make stale or duplicate calls no-ops.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.db import jsonb, q
from app.domain import Run
from app.runs import Conn, run_uuid


def claimed_by_worker(conn: Conn, run_ids: list[str], worker: str) -> list[Run]:
    """Which of these runs are running an attempt of `worker`'s (claims whose reply was lost)."""
    rows = conn.execute(
        q("claimed_by_worker"), {"ids": [run_uuid(r) for r in run_ids], "worker": worker}
    )
    return [Run.from_row(row) for row in rows]


def record_progress(conn: Conn, run: Run, percent: float, message: str) -> bool:
    """Store and emit progress; returns whether cancellation has been requested."""
    data = {"percent": percent, "message": message}
    row = conn.execute(
        q("record_progress"), {"id": run_uuid(run.id), "attempt": run.attempt, "data": jsonb(data)}
    ).fetchone()
    return bool(row and row["cancel_requested_at"])


def record_log(conn: Conn, run: Run, message: str, level: str) -> bool:
    data = {"level": level, "message": message}
    row = conn.execute(
        q("record_log"), {"id": run_uuid(run.id), "attempt": run.attempt, "data": jsonb(data)}
    ).fetchone()
    return bool(row and row["cancel_requested_at"])


def renew_leases(conn: Conn, run_ids: list[str], *, worker: str, lease_s: float) -> dict[str, bool]:
    """Extend the leases of this worker's attempts; run id -> cancel requested."""
    rows = conn.execute(
        q("renew_leases"),
        {"ids": [run_uuid(r) for r in run_ids], "worker": worker, "lease_s": lease_s},
    )
    return {str(row["id"]): row["cancel_requested_at"] is not None for row in rows}


def recover_stalled(conn: Conn, limit: int = 100) -> tuple[list[Run], list[Run]]:
    """Runs whose lease expired: requeued on a first stall, failed (or cancelled) on a second;
    and the held runs their freed slots let start (the queued of both are to enqueue)."""
    recovered = []
    with conn.transaction():
        for row in conn.execute(q("expired_leases"), {"limit": limit}).fetchall():
            run = Run.from_row(row)
            params = {"id": run_uuid(run.id), "attempt": run.attempt}
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
        freed = {"freed": [run_uuid(run.id) for run in recovered], "claiming": []}
        released = [Run.from_row(row) for row in conn.execute(q("release_after"), freed)]
    return recovered, released


# The changes of an attempt, which a worker commits in groups (group_commit). Each one's guard
# makes it a no-op (None) for a stale attempt.


@dataclass(frozen=True)
class Change:
    """One state change of this module (a runs.sql query and its parameters), for group_commit."""

    query: str
    params: dict[str, Any]


def claim_change(run_id: str, *, worker: str, lease_s: float) -> Change:
    """Start the next attempt; None when the run is no longer queued (fencing)."""
    return Change("claim_attempt", {"id": run_uuid(run_id), "worker": worker, "lease_s": lease_s})


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


# The changes that end an attempt, freeing its slot under its queue's limits.
FREES = frozenset(
    {"finish_attempt", "retry_attempt", "fail_attempt", "cancel_running", "release_attempt"}
)


@dataclass(frozen=True)
class Committed:
    done: list[Run | None]  # each change's run; None where its guard made it a no-op
    released: list[Run]  # held runs that the freed slots let start: the caller enqueues them


def group_commit(conn: Conn, changes: list[Change]) -> list[Run | None]:
    return commit(conn, changes).done


def commit(conn: Conn, changes: list[Change]) -> Committed:
    """Several state changes in one transaction and one round trip (group commit).

    Each keeps its guard and its event; a worker uses this to pay one WAL flush for a batch.
    Consecutive claims, and consecutive finishes, go as one statement each (_BATCHED): the
    statement's overhead, not the row's, is most of a no-op job's cost. After the last change
    that ends an attempt, the same transaction releases what queue limits held back for the
    slots it freed (app/sql/queries/limits.sql release_after).
    """
    if not changes:
        return Committed([], [])
    groups = list(_groups(changes))
    last_freeing = max((i for i, g in enumerate(groups) if g[0].query in FREES), default=-1)
    release = None
    with conn.pipeline(), conn.transaction():
        sent = []
        for i, group in enumerate(groups):
            sent.append((group, conn.execute(*_statement(group))))
            if i == last_freeing:
                release = conn.execute(q("release_after"), _release_params(changes))
    done: list[Run | None] = []
    for group, cur in sent:
        rows = cur.fetchall()
        if group[0].query == "claim_attempt":
            done += _claimed_by_place(group, rows)
            continue
        # a run listed twice (a duplicate delivery) changes once: its first place gets the run
        by_id = {run.id: run for run in map(Run.from_row, rows)}
        done += [by_id.pop(str(change.params["id"]), None) for change in group]
    released = [Run.from_row(row) for row in release.fetchall()] if release else []
    return Committed(done, released)


# The queries that take lists, one change's parameters each, and how to merge them.
_BATCHED: dict[str, Callable[[list[dict[str, Any]]], dict[str, Any]]] = {
    "claim_attempt": lambda ps: {**ps[0], "ids": [p["id"] for p in ps]},  # one worker and lease
    "finish_attempt": lambda ps: {
        "ids": [p["id"] for p in ps],
        "attempts": [p["attempt"] for p in ps],
        "results": [p["result"] for p in ps],
    },
}


def _claimed_by_place(group: list[Change], rows: list[dict[str, Any]]) -> list[Run | None]:
    """A claim's runs in the places of its list. A place may have gone to a held run ahead of
    the one popped there (runlane_admit); a run listed twice takes its first place."""
    first: dict[str, int] = {}
    for place, change in enumerate(group, 1):
        first.setdefault(str(change.params["id"]), place)
    placed = {}
    for row in rows:
        run = Run.from_row(row)
        placed[first.get(run.id, row["claim_place"])] = run
    return [placed.get(place) for place in range(1, len(group) + 1)]


def _release_params(changes: list[Change]) -> dict[str, list[uuid.UUID]]:
    return {
        "freed": [c.params["id"] for c in changes if c.query in FREES],
        "claiming": [c.params["id"] for c in changes if c.query == "claim_attempt"],
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
    return {"id": run_uuid(run.id), "attempt": run.attempt}
