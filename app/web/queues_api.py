"""Queues as the caller sees them (counts, pauses, live workers), and the task registry."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from flask import Blueprint
from redis import RedisError

from app import dispatch, live_workers, logs, runs
from app.db import q
from app.domain import Run, RunStatus
from app.redis_keys import PRIORITIES
from app.runs import Conn
from app.web.auth import require_tenant, tenant
from app.web.current import services
from app.web.errors import ApiError
from app.web.schemas import NAME_PATTERN

log = logs.get("runlane.web")

bp = Blueprint("queues", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.get("/queues")
def list_queues() -> dict[str, Any]:
    with services().pool.connection() as conn:
        counts, paused = _counts(conn, None), _paused(conn, None)
    workers = _live_workers()
    names = sorted(set(counts) | paused | set(workers))
    return {"items": [_queue(name, counts, paused, workers) for name in names]}


@bp.post("/queues/<name>/pause")
def pause_queue(name: str) -> dict[str, Any]:
    """Nothing new of the caller's in this queue starts (workers refuse to claim its runs)."""
    _check_name(name)
    with services().pool.connection() as conn:
        conn.execute(q("pause_queue"), {"tenant": tenant(), "queue": name})
        return _one_queue(conn, name)


@bp.post("/queues/<name>/resume")
def resume_queue(name: str) -> dict[str, Any]:
    """Unpause, and hand RQ again the queued runs its workers dropped while paused."""
    _check_name(name)
    svc = services()
    with svc.pool.connection() as conn:
        queued = _resume(conn, name)
        try:
            dispatch.enqueue(svc.redis, svc.keys, queued)
            runs.mark_dispatched(conn, [run.id for run in queued])
        except RedisError as exc:  # still queued in Postgres: the scheduler's sweep dispatches them
            log.warning("resume.dispatch_failed", extra={"queue": name, "error": str(exc)})
        return _one_queue(conn, name)


def _resume(conn: Conn, name: str) -> list[Run]:
    """Deletes the pause; the caller's queued runs of the queue, which workers dropped meanwhile."""
    conn.execute(q("resume_queue"), {"tenant": tenant(), "queue": name})
    rows = conn.execute(q("queued_in_queue"), {"tenant": tenant(), "queue": name}).fetchall()
    return [Run.from_row(row) for row in rows]


@bp.get("/tasks")
def list_tasks() -> dict[str, Any]:
    registry = services().registry
    return {"items": [registry.tasks[name].to_json() for name in sorted(registry.tasks)]}


def _check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ApiError(404, "no such queue: queue names are letters, digits, '_', '.' and '-'")


def _one_queue(conn: Conn, name: str) -> dict[str, Any]:
    return _queue(name, _counts(conn, name), _paused(conn, name), _live_workers())


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


def _counts(conn: Conn, queue: str | None) -> dict[str, Counter[str]]:
    """The caller's runs per queue and status."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in conn.execute(q("queue_counts"), {"tenant": tenant(), "queue": queue}):
        counts[row["queue"]][row["status"]] = row["n"]
    return counts


def _paused(conn: Conn, queue: str | None) -> set[str]:
    rows = conn.execute(q("queue_pauses"), {"tenant": tenant(), "queue": queue})
    return {row["queue"] for row in rows}


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


def _runlane_queue(rq_name: str, prefix: str) -> str | None:
    """The runlane queue of an RQ queue name `{prefix}.{queue}.p{priority}`, if it is one."""
    head = f"{prefix}."
    if not rq_name.startswith(head):
        return None
    queue, sep, priority = rq_name[len(head) :].rpartition(".p")
    if not sep or not queue or not priority.isdigit() or int(priority) not in PRIORITIES:
        return None
    return queue
