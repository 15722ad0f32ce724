"""Bulk cancel and retry (contract §2): POST /v1/runs/cancel and /v1/runs/retry, the single-run
rules applied to every run of the caller that a selection names (app.bulk)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from redis import RedisError

from app import bulk, dispatch, flows, logs
from app.web.auth import require_tenant, tenant
from app.web.current import metrics, read_json, relay_nudged, services, validate
from app.web.openapi import Reply, documented
from app.web.responses import BulkOut
from app.web.schemas import MAX_BULK_IDS, RunSelection

log = logs.get("runlane.web")

bp = Blueprint("bulk", __name__, url_prefix="/v1")
bp.before_request(require_tenant)

SELECTION = (
    f"The body selects the caller's runs: `ids` (at most {MAX_BULK_IDS:,}), or any of the "
    "filters of GET /v1/runs (`status`, `queue`, `task`), not both; `{}` selects every run of "
    "the caller. Other tenants' runs never match. `matched` counts the runs selected, "
    "`changed` those of them the rule changed; the others are left as they are."
)
COUNTS = {200: Reply("How many runs matched, and how many of them changed", BulkOut)}


@bp.post("/runs/cancel")
@documented(
    "Cancel many runs",
    body=RunSelection,
    responses=COUNTS,
    description="POST /v1/runs/{id}/cancel's rule for each selected run: waiting, queued and "
    "delayed runs are cancelled at once (a parent's live children with it), running ones are "
    "asked to stop and end `cancelled`; finished runs, and running ones already asked, are "
    "left as they are. " + SELECTION,
)
def cancel_runs() -> dict[str, Any]:
    selection = _selection()
    svc = services()
    with svc.pool.connection() as conn:
        outcome = bulk.cancel(conn, tenant(), selection)
        children = flows.after_change(conn, svc.redis, svc.keys, outcome.changed)
    metrics().finished([*outcome.changed, *children])  # the running end in their workers
    if outcome.stop:
        try:  # without the flags (Redis down) workers learn of it at their next heartbeat
            dispatch.request_stops(svc.redis, svc.keys, outcome.stop)
        except RedisError as exc:
            log.warning("cancel.flag_failed", extra={"runs": len(outcome.stop), "error": str(exc)})
    return _counts(outcome)


@bp.post("/runs/retry")
@documented(
    "Retry many failed or cancelled runs",
    body=RunSelection,
    responses=COUNTS,
    description="POST /v1/runs/{id}/retry's rule for each selected run: a failed or cancelled "
    "run is queued again with a fresh attempt budget (a parent re-runs what did not succeed); "
    "other runs are left as they are. " + SELECTION,
)
def retry_runs() -> dict[str, Any]:
    selection = _selection()
    svc = services()
    with svc.pool.connection() as conn:
        outcome = bulk.retry(conn, tenant(), selection)
    if outcome.enqueue:
        try:  # the scheduler's sweep dispatches them otherwise
            dispatch.enqueue(svc.redis, svc.keys, outcome.enqueue)
            relay_nudged()  # enqueue nudged it
        except RedisError as exc:
            log.warning("dispatch.failed", extra={"runs": len(outcome.enqueue), "error": str(exc)})
    return _counts(outcome)


def _selection() -> bulk.Selection:
    body = validate(RunSelection, read_json())
    return bulk.Selection(ids=body.ids, status=body.status, queue=body.queue, task=body.task)


def _counts(outcome: bulk.Outcome) -> dict[str, Any]:
    return {"matched": outcome.matched, "changed": len(outcome.changed)}
