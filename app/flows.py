"""Flows and batches (contract §5.4, §5.5): many runs made in one transaction and one statement,
and what follows the change of a flow's run.

A flow's parent waits (status `waiting`) until every child is terminal; the flow trigger of
migration 0010 queues or fails it in the transaction of the child's end, whatever path ends the
child. Right after such a change, whoever made it settles the flow (`settle`): it cancels what a
parent that ended early left behind and picks up the parents it queued, for RQ. The scheduler
settles every flow now and then, for a process killed in between.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from redis import Redis, RedisError

from app import dedupe, dispatch, logs, runs
from app.db import q, request_jsonb
from app.domain import Run, RunStatus, rfc3339
from app.redis_keys import Keys
from app.runs import Conn, NewRun, RunConflict

log = logs.get("runlane.flows")

MAX_DEPTH = 5  # levels of children below a flow's root
MAX_CHILDREN = 1000  # children of one parent
MAX_RUNS = 10_000  # runs one request may make, a flow or a whole batch
MAX_BATCH = 1000  # items of one batch
RETRYABLE = (RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class Node:
    """A run to make and its children, in the order given."""

    run: NewRun
    children: tuple[Node, ...] = ()
    on_child_failure: str = "fail"


class DedupeKeyHeld(Exception):
    """A child's dedupe key names a live run. A child cannot be answered by another run (its
    parent waits for its own children), so the request is refused whole."""

    def __init__(self, field: str, holder: Run) -> None:
        super().__init__(f"{field}: the dedupe key is held by run {holder.id}")
        self.field = field
        self.holder = holder


@dataclass(frozen=True)
class Batch:
    """A batch's runs in the order of its items (a live run holding an item's dedupe key stands
    for it). `fingerprint`: the batch's Idempotency-Key was used before, by the request with
    this fingerprint, and these are the runs that request made."""

    runs: list[Run]
    fingerprint: str | None = None
    made: list[Run] = field(default_factory=list)  # every run the request made, children too


@dataclass(frozen=True)
class Settled:
    enqueue: list[Run]  # queued runs of the flows that RQ does not hold yet: parents woken
    stop: list[Run]  # running children asked to stop: their attempts' cancel flags to set
    cancelled: list[Run]  # children cancelled at once, their parent having ended (for metrics)


@dataclass(frozen=True)
class _Planned:
    """A run of a request placed in its tree: its id, and its field path for errors."""

    node: Node
    id: uuid.UUID
    path: str
    root_id: uuid.UUID | None
    parent_id: uuid.UUID | None = None
    index: int | None = None


# -- making runs --------------------------------------------------------------------------------


def flow_creator(root: Node, made: list[Run]) -> dedupe.Create:
    """How app.dedupe.create_run makes the flow of `root` once the root's key is taken; the
    runs made are added to `made`."""

    def create(conn: Conn, new: NewRun, run_id: uuid.UUID) -> tuple[Run, bool]:
        return create_flow(conn, root, root_id=run_id, made=made)

    return create


def create_flow(
    conn: Conn, root: Node, *, root_id: uuid.UUID, made: list[Run] | None = None
) -> tuple[Run, bool]:
    """The whole tree with its first events, in one transaction (the runs made are added to
    `made`, root first); (the run that took the Idempotency-Key before, False) when it was
    used. Raises DedupeKeyHeld."""
    planned = _plan(root, root_id, root_id=root_id)
    with conn.transaction() as tx:
        _take_child_keys(conn, planned[1:], prefix="")
        inserted = _insert(conn, root.run.tenant, planned)
        if inserted and inserted[0].id == str(root_id):
            if made is not None:
                made += inserted
            return inserted[0], True
        raise psycopg.Rollback(tx)  # the key was used: undo the children made without it
    existing = runs.run_by_idempotency_key(conn, root.run.tenant, str(root.run.idempotency_key))
    if existing is None:  # deleted (retention) between the two statements
        return create_flow(conn, root, root_id=uuid.uuid4(), made=made)
    return existing, False


def create_batch(
    conn: Conn, tenant: str, items: Sequence[Node], *, key: str | None, fingerprint: str | None
) -> Batch:
    """A batch's runs (each item maybe a flow) in one transaction and one insert; the runs the
    Idempotency-Key made before when it was used. Raises DedupeKeyHeld for a flow's child."""
    ids = [uuid.uuid4() for _ in items]
    with conn.transaction():
        if key is not None:
            params = {"tenant": tenant, "key": key, "fingerprint": fingerprint, "run_ids": ids}
            if conn.execute(q("take_batch_key"), params).fetchone() is None:
                return _made_before(conn, tenant, key)
        answers, items = _dedupe_items(conn, items, ids)
        planned: list[_Planned] = []
        for i, (item, run_id) in enumerate(zip(items, ids, strict=True)):
            if answers[i] is None:
                tree = _plan(item, run_id, root_id=run_id if item.children else None)
                _take_child_keys(conn, tree[1:], prefix=f"runs[{i}].")
                planned += tree
        inserted = _insert(conn, tenant, planned)
    made = {run.id: run for run in inserted}
    found = [_answer(answers[i], made, ids) or made[str(run_id)] for i, run_id in enumerate(ids)]
    return Batch(found, made=inserted)


def _made_before(conn: Conn, tenant: str, key: str) -> Batch:
    row = conn.execute(q("batch_by_key"), {"tenant": tenant, "key": key}).fetchone()
    assert row is not None  # the conflicting row is committed: the insert waited for it
    found = conn.execute(q("runs_by_ids"), {"tenant": tenant, "ids": row["run_ids"]})
    made = [Run.from_row(r) for r in found]
    return Batch(made, fingerprint=row["request_fingerprint"])


def _dedupe_items(
    conn: Conn, items: Sequence[Node], ids: list[uuid.UUID]
) -> tuple[list[Run | int | None], list[Node]]:
    """Who answers for each item: None (it is made), a live run holding its dedupe key, or an
    earlier item of the batch with the same key (which takes a debounced item's input, the
    last one given winning as it does across submits). The items, debounces applied."""
    answers: list[Run | int | None] = [None] * len(items)
    items = list(items)
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        new = item.run
        if new.dedupe is None:
            continue
        earlier = first.get(new.dedupe.key)
        if earlier is not None:
            answers[i] = earlier
            if new.dedupe.debounce_ms is not None and items[earlier].run.dedupe.debounce_ms:  # type: ignore[union-attr]
                taken = items[earlier]
                debounced = dataclasses.replace(
                    taken.run,
                    input=new.input,
                    metadata=new.metadata,
                    scheduled_for=new.scheduled_for,
                )
                items[earlier] = dataclasses.replace(taken, run=debounced)
            continue
        holder = _take_key(conn, new, ids[i])
        if holder is None:
            first[new.dedupe.key] = i
        else:
            answers[i] = holder
    return answers, items


def _take_key(conn: Conn, new: NewRun, run_id: uuid.UUID) -> Run | None:
    for _ in range(dedupe.TRIES):
        holder = dedupe.take(conn, new, run_id)
        if holder != dedupe.LOOK_AGAIN:
            return holder if isinstance(holder, Run) else None
    raise RuntimeError(f"dedupe key {new.dedupe.key!r} changed hands {dedupe.TRIES} times")  # type: ignore[union-attr]


def _answer(answer: Run | int | None, made: dict[str, Run], ids: list[uuid.UUID]) -> Run | None:
    if isinstance(answer, int):
        return made[str(ids[answer])]
    return answer


def _take_child_keys(conn: Conn, planned: Sequence[_Planned], *, prefix: str) -> None:
    """The dedupe keys of a flow's children (its root's is app.dedupe's or the batch's)."""
    for run in planned:
        if run.node.run.dedupe is not None and (holder := _take_key(conn, run.node.run, run.id)):
            raise DedupeKeyHeld(f"{prefix}{run.path}.dedupe.key", holder)


def _plan(node: Node, run_id: uuid.UUID, *, root_id: uuid.UUID | None) -> list[_Planned]:
    """The tree's runs, parents before their children, each with its id."""
    planned = [_Planned(node, run_id, "", root_id)]
    i = 0
    while i < len(planned):
        parent = planned[i]
        for index, child in enumerate(parent.node.children):
            path = f"{parent.path}.children[{index}]" if parent.path else f"children[{index}]"
            planned.append(_Planned(child, uuid.uuid4(), path, root_id, parent.id, index))
        i += 1
    return planned


def _insert(conn: Conn, tenant: str, planned: list[_Planned]) -> list[Run]:
    """The runs made, in the order planned (a parent's `children` summary as it starts)."""
    if not planned:
        return []
    rows = [_row(place, run) for place, run in enumerate(planned, 1)]
    # a request's runs share its traceparent (app.web.new_runs gives each the same)
    traceparent = planned[0].node.run.traceparent
    params = {"tenant": tenant, "runs": request_jsonb(rows), "traceparent": traceparent}
    made = conn.execute(q("insert_runs"), params).fetchall()
    by_id = {run.id: _with_children(run) for run in map(Run.from_row, made)}
    return [found for run in planned if (found := by_id.get(str(run.id))) is not None]


def _row(place: int, planned: _Planned) -> dict[str, Any]:
    node, new = planned.node, planned.node.run
    root = planned.parent_id is None  # only a root carries the request's Idempotency-Key
    status = "waiting" if node.children else "delayed" if new.delayed else "queued"
    return {
        "id": str(planned.id),
        "task": new.task,
        "queue": new.queue,
        "status": status,
        "input": new.input,
        "max_attempts": new.max_attempts,
        "backoff": new.backoff,
        "timeout_s": new.timeout_s,
        "priority": new.priority,
        "metadata": new.metadata,
        "idempotency_key": new.idempotency_key if root else None,
        "request_fingerprint": new.request_fingerprint if root else None,
        "dedupe_key": new.dedupe.key if new.dedupe else None,
        "limit_key": new.limit_key,
        "parent_id": _text(planned.parent_id),
        "root_id": _text(planned.root_id),
        "child_index": planned.index,
        "on_child_failure": node.on_child_failure if node.children else None,
        "children_total": len(node.children),
        "scheduled_for": rfc3339(new.scheduled_for) if new.delayed else None,
        "place": place,
    }


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _with_children(run: Run) -> Run:
    """A run just made, given the `children` summary the statement that made it cannot select
    (runlane_children_summary reads children the same statement inserts): none ended yet."""
    if run.children_total == 0:
        return run
    ended = {"succeeded": 0, "failed": 0, "cancelled": 0}
    summary = {"total": run.children_total, **ended, "pending": run.children_pending}
    return dataclasses.replace(run, children=summary)


# -- after a change ------------------------------------------------------------------------------


def settle(conn: Conn, roots: Sequence[str] | None) -> Settled:
    """Right after a change to runs of the flows `roots` (None: every flow, the scheduler's
    pass): the live children of parents that ended before them cancelled (a running one asked
    to stop), level by level; and the flows' queued runs RQ does not hold yet, to enqueue."""
    ids = None if roots is None else [uuid.UUID(r) for r in dict.fromkeys(roots)]
    stop: list[Run] = []
    cancelled: list[Run] = []
    for _ in range(MAX_DEPTH + 1):  # each pass reaches one level further down
        with conn.transaction():
            parents = conn.execute(q("take_cascades"), {"roots": ids}).fetchall()
            if not parents:
                break
            params = {
                "parents": [p["id"] for p in parents],
                "statuses": [p["status"] for p in parents],
            }
            changed = [Run.from_row(row) for row in conn.execute(q("cascade_cancel"), params)]
        stop += [run for run in changed if run.status is RunStatus.RUNNING]
        cancelled += [run for run in changed if run.status is RunStatus.CANCELLED]
    enqueue: list[Run] = []
    if ids:
        enqueue = [Run.from_row(r) for r in conn.execute(q("dispatch_flow_runs"), {"roots": ids})]
    return Settled(enqueue, stop, cancelled)


def after_change(conn: Conn, redis: Redis, keys: Keys, changed: Sequence[Run | None]) -> list[Run]:
    """settle the flows of the runs just changed, if any is a flow's, and hand what it found to
    Redis: RQ gets the parents it queued, the running children it cancelled their stop flags.
    With Redis away the scheduler's sweep enqueues, and workers see the cancels in Postgres.
    Returns the children it cancelled at once (their runs ended here, for the metrics)."""
    roots = [run.root_id for run in changed if run is not None and run.root_id is not None]
    if not roots:
        return []
    settled = settle(conn, roots)
    if not settled.enqueue and not settled.stop:
        return settled.cancelled
    try:
        with redis.pipeline(transaction=False) as pipe:
            dispatch.request_stops(pipe, keys, settled.stop)
            pipe.execute()
        dispatch.enqueue(redis, keys, settled.enqueue)
    except RedisError as exc:
        log.warning("flows.hand_over_failed", extra={"roots": len(roots), "error": str(exc)})
    return settled.cancelled


def retry(conn: Conn, tenant: str, run_id: str) -> tuple[Run, list[Run]]:
    """runs.retry_run, for a parent too: it re-runs alone when its children all succeeded;
    else its failed and cancelled children run again (theirs first, for a child that is a
    parent: the same rule, from the bottom up) and it waits for them. Returns the run and the
    runs queued, to enqueue."""
    run = runs.get_run(conn, tenant, run_id)
    if run.children_total == 0 or run.status not in RETRYABLE:
        return runs.retry_run(conn, tenant, run_id), []
    with conn.transaction():
        again, queued = _retry_parent(conn, tenant, uuid.UUID(run.id))
    if again is None:
        raise RunConflict(run, "the run changed while it was retried; try again")
    return runs.get_run(conn, tenant, run_id), queued


def _retry_parent(conn: Conn, tenant: str, parent: uuid.UUID) -> tuple[Run | None, list[Run]]:
    queued: list[Run] = []
    for row in conn.execute(q("failed_parents_among_children"), {"id": parent}).fetchall():
        child, below = _retry_parent(conn, tenant, row["id"])
        queued += below
        if child is not None and child.status is RunStatus.QUEUED:
            queued.append(child)
    queued += [Run.from_row(r) for r in conn.execute(q("retry_children"), {"id": parent})]
    params = {"id": parent, "tenant": tenant}
    pending = conn.execute(q("children_pending"), params).fetchone()
    query = "wait_again" if pending and pending["children_pending"] > 0 else "retry_run"
    row = conn.execute(q(query), params).fetchone()
    return (Run.from_row(row) if row else None), queued


# -- reads --------------------------------------------------------------------------------------


def children_of(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    """A parent's children as its task sees them (ctx.children): {id, task, status, result,
    error}, in the order given."""
    rows = conn.execute(q("children_of"), {"id": uuid.UUID(run_id)}).fetchall()
    return [{**row, "id": str(row["id"])} for row in rows]
