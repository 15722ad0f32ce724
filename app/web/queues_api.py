"""Queues as the caller sees them (counts, pauses, limits, live workers), and the task registry."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from flask import Blueprint
from redis import RedisError

from app import dispatch, limits, live_workers, logs, queues, runs
from app.domain import Run, RunStatus
from app.limits import NO_LIMITS, Limits, Rate
from app.runs import Conn
from app.web.auth import require_tenant, tenant
from app.web.current import read_json, services, validate
from app.web.errors import ApiError
from app.web.openapi import NAME, Reply, documented
from app.web.responses import QueueList, QueueOut, TaskList
from app.web.schemas import NAME_PATTERN, LimitsIn, RateIn

log = logs.get("runlane.web")

bp = Blueprint("queues", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.get("/queues")
@documented("List queues", responses={200: Reply("Queues", QueueList)})
def list_queues() -> dict[str, Any]:
    with services().pool.connection() as conn:
        counts, paused = queues.run_counts(conn, tenant()), queues.paused_queues(conn, tenant())
        limited = limits.queue_limits(conn, tenant())
        recent = queues.recent_finishes(conn, tenant())
    workers = _live_workers()
    names = sorted(set(counts) | paused | set(workers) | set(limited))
    return {"items": [_queue(name, counts, paused, workers, limited, recent) for name in names]}


@bp.put("/queues/<name>/limits")
@documented(
    "Set the caller's limits of a queue",
    path=[NAME],
    body=LimitsIn,
    responses={200: Reply("The queue", QueueOut), 404: None, 422: None},
)
def put_limits(name: str) -> dict[str, Any]:
    """The fields given change (null removes a limit), the others stay; they hold from the next
    start on. Held runs the new limits let start are released at once."""
    _check_name(name)
    body = validate(LimitsIn, read_json())
    changes = {field: _limit(getattr(body, field)) for field in body.model_fields_set}
    svc = services()
    with svc.pool.connection() as conn:
        _, released = limits.set_limits(conn, tenant(), name, changes)
        _dispatch(released, name)
        return _one_queue(conn, name)


@bp.post("/queues/<name>/pause")
@documented(
    "Pause the caller's runs in a queue",
    path=[NAME],
    responses={200: Reply("The queue", QueueOut), 404: None},
)
def pause_queue(name: str) -> dict[str, Any]:
    """Nothing new of the caller's in this queue starts (workers refuse to claim its runs)."""
    _check_name(name)
    with services().pool.connection() as conn:
        queues.pause_queue(conn, tenant(), name)
        return _one_queue(conn, name)


@bp.post("/queues/<name>/resume")
@documented(
    "Resume the caller's runs in a queue",
    path=[NAME],
    responses={200: Reply("The queue", QueueOut), 404: None},
)
def resume_queue(name: str) -> dict[str, Any]:
    """Unpause, and hand RQ again the queued runs its workers dropped while paused."""
    _check_name(name)
    svc = services()
    with svc.pool.connection() as conn:
        queued = queues.resume_queue(conn, tenant(), name)
        if _dispatch(queued, name):
            runs.mark_dispatched(conn, [run.id for run in queued])
        return _one_queue(conn, name)


@bp.get("/tasks")
@documented(
    "List registered tasks",
    responses={200: Reply("Tasks", TaskList)},
    storage=False,
    tags=["tasks"],
)
def list_tasks() -> dict[str, Any]:
    registry = services().registry
    return {"items": [registry.tasks[name].to_json() for name in sorted(registry.tasks)]}


def _check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ApiError(404, "no such queue: queue names are letters, digits, '_', '.' and '-'")


def _dispatch(queued: list[Run], name: str) -> bool:
    """Hand RQ runs a state change queued; False when Redis failed (they are queued in
    Postgres: the scheduler's sweep dispatches them)."""
    svc = services()
    try:
        dispatch.enqueue(svc.redis, svc.keys, queued)
    except RedisError as exc:
        log.warning("queue.dispatch_failed", extra={"queue": name, "error": str(exc)})
        return False
    return True


def _limit(value: Any) -> Any:
    return Rate(value.limit, value.period_s) if isinstance(value, RateIn) else value


def _one_queue(conn: Conn, name: str) -> dict[str, Any]:
    counts = queues.run_counts(conn, tenant(), name)
    paused = queues.paused_queues(conn, tenant(), name)
    limited = limits.queue_limits(conn, tenant(), name)
    recent = queues.recent_finishes(conn, tenant(), name)
    return _queue(name, counts, paused, _live_workers(), limited, recent)


def _queue(
    name: str,
    counts: dict[str, queues.Counts],
    paused: set[str],
    workers: Counter[str],
    limited: dict[str, Limits],
    recent: queues.Recent,
) -> dict[str, Any]:
    seen = counts.get(name, queues.Counts(Counter(), frozenset()))
    return {
        "name": name,
        "paused": name in paused,
        "workers": workers[name],
        "counts": {status.value: seen.by_status[status.value] for status in RunStatus},
        "counts_estimated": [s.value for s in RunStatus if s.value in seen.estimated],
        "limits": limited.get(name, NO_LIMITS).to_json(),
        "recent": recent.to_json(name),
    }


def _live_workers() -> Counter[str]:
    """Live workers per runlane queue (app.live_workers: heartbeating now)."""
    svc = services()
    served: Counter[str] = Counter()
    try:
        workers = live_workers.live_workers(svc.redis, svc.keys)
    except RedisError as exc:  # counts and pauses still come from Postgres
        log.warning("queues.workers_unavailable", extra={"error": str(exc)})
        return served
    for worker in workers:
        served.update(worker.queues)
    return served
