"""Queues as the caller sees them (counts, pauses, live workers), and the task registry."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from flask import Blueprint
from redis import RedisError

from app import dispatch, live_workers, logs, queues, runs
from app.domain import RunStatus
from app.runs import Conn
from app.web.auth import require_tenant, tenant
from app.web.current import services
from app.web.errors import ApiError
from app.web.openapi import NAME, Reply, documented
from app.web.schemas import NAME_PATTERN, QueueList, QueueOut, TaskList

log = logs.get("runlane.web")

bp = Blueprint("queues", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.get("/queues")
@documented("List queues", responses={200: Reply("Queues", QueueList)})
def list_queues() -> dict[str, Any]:
    with services().pool.connection() as conn:
        counts, paused = queues.run_counts(conn, tenant()), queues.paused_queues(conn, tenant())
    workers = _live_workers()
    names = sorted(set(counts) | paused | set(workers))
    return {"items": [_queue(name, counts, paused, workers) for name in names]}


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
        try:
            dispatch.enqueue(svc.redis, svc.keys, queued)
            runs.mark_dispatched(conn, [run.id for run in queued])
        except RedisError as exc:  # still queued in Postgres: the scheduler's sweep dispatches them
            log.warning("resume.dispatch_failed", extra={"queue": name, "error": str(exc)})
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


def _one_queue(conn: Conn, name: str) -> dict[str, Any]:
    counts = queues.run_counts(conn, tenant(), name)
    return _queue(name, counts, queues.paused_queues(conn, tenant(), name), _live_workers())


def _queue(
    name: str, counts: dict[str, Counter[str]], paused: set[str], workers: Counter[str]
) -> dict[str, Any]:
    by_status = counts.get(name, Counter())
    return {
        "name": name,
        "paused": name in paused,
        "workers": workers[name],
        "counts": {status.value: by_status[status.value] for status in RunStatus},
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
