"""Runs: submit (idempotently), read, list, cancel, retry, and their event history."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request
from redis import RedisError

from app import dispatch, logs, runs
from app.domain import Run, RunStatus
from app.tasks import TaskDef
from app.web import errors, idempotency, tails
from app.web.auth import query_token, require_tenant, tenant
from app.web.current import (
    idempotency_store,
    metrics,
    query_args,
    read_json,
    relay_nudged,
    served_queues,
    services,
    shown,
    validate,
)
from app.web.errors import ApiError
from app.web.fields import EPOCH
from app.web.openapi import (
    CREATED,
    DEDUPLICATED,
    EVENTS,
    FINISHED,
    IDEMPOTENCY_KEY,
    LAST_EVENT_ID,
    RUN_ID,
    Reply,
    documented,
)
from app.web.schemas import EventListQuery, RunCreate, RunList, RunListQuery, RunOut
from app.web.submit import Ports, SubmitResult, submit

CANCEL_FLAG_TTL_S = 24 * 3600
log = logs.get("runlane.web")

bp = Blueprint("runs", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.post("/runs")
@documented(
    "Submit a run",
    body=RunCreate,
    headers=[IDEMPOTENCY_KEY],
    responses={201: CREATED, 200: DEDUPLICATED, 409: None},
)
def submit_run() -> Response:
    # Everything that can refuse the request comes before the claim, so refusals leave the
    # Idempotency-Key unused.
    key = idempotency.parse_key(request.headers.get("Idempotency-Key"))
    body = read_json()
    spec = validate(RunCreate, body, registry=services().registry)
    fp = idempotency.fingerprint(request.method, request.path, body) if key else None
    result = submit(Ports.of(services(), idempotency_store(), shown), _new_run(spec, key, fp))
    relay_nudged()  # a new run's dispatch pipeline nudged; a replay committed nothing
    if result.replayed:
        metrics().idempotent_replays.inc()
    elif result.run is not None:
        metrics().runs_created.labels(result.run.queue).inc()
    return _response(result)


@bp.get("/runs/<run_id>")
@documented("Get a run", path=[RUN_ID], responses={200: Reply("The run", RunOut), 404: None})
def get_run(run_id: str) -> dict[str, Any]:
    with services().pool.connection() as conn:
        run = runs.get_run(conn, tenant(), run_id)
    return shown(run)


@bp.get("/runs")
@documented(
    "List runs, newest first",
    query=RunListQuery,
    responses={200: Reply("A page of runs", RunList), 400: None, 422: None},
    description="A malformed parameter is 400; one that no stored value can hold (a NUL "
    "character) is 422 naming it.",
)
def list_runs() -> dict[str, Any]:
    query = validate(RunListQuery, query_args(), status=400)
    with services().pool.connection() as conn:
        found = runs.list_runs(
            conn,
            tenant(),
            status=query.status.value if query.status else None,
            queue=query.queue,
            task=query.task,
            limit=query.limit + 1,  # one more tells whether there is a next page
            before=_decode_cursor(query.cursor) if query.cursor else None,
        )
    page = found[: query.limit]
    more = len(found) > query.limit
    served = served_queues()
    return {
        "items": [shown(run, served) for run in page],
        "next_cursor": _encode_cursor(page[-1]) if more else None,
    }


@bp.post("/runs/<run_id>/cancel")
@documented(
    "Cancel a run", path=[RUN_ID], responses={200: Reply("The run", RunOut), 404: None, 409: None}
)
def cancel_run(run_id: str) -> dict[str, Any]:
    svc = services()
    with svc.pool.connection() as conn:
        run = runs.request_cancel(conn, tenant(), run_id)
    if run.status is RunStatus.RUNNING:
        # The worker polls this attempt's flag every few hundred ms (the run's next attempt,
        # after a retry, has a flag of its own); without it (Redis down) it still learns of the
        # request from Postgres at its next heartbeat.
        try:
            svc.redis.set(svc.keys.cancel(run.id, run.attempt), "1", ex=CANCEL_FLAG_TTL_S)
        except RedisError as exc:
            log.warning("cancel.flag_failed", extra={"run_id": run.id, "error": str(exc)})
    return shown(run)


@bp.post("/runs/<run_id>/retry")
@documented(
    "Retry a failed or cancelled run",
    path=[RUN_ID],
    responses={200: Reply("The run", RunOut), 404: None, 409: None},
)
def retry_run(run_id: str) -> dict[str, Any]:
    svc = services()
    with svc.pool.connection() as conn:
        run = runs.retry_run(conn, tenant(), run_id)
    _enqueue(run)
    return shown(run)


@bp.get("/runs/<run_id>/events")
@documented(
    "A run's events (JSON history, or Server-Sent Events)",
    path=[RUN_ID],
    query=EventListQuery,
    headers=[LAST_EVENT_ID],
    token_query=True,
    responses={200: EVENTS, 204: FINISHED, 400: None, 404: None, 422: None},
    description="`?token=` is accepted for the Server-Sent Events form only; the JSON form "
    "requires the Authorization header.",
)
@query_token(when=tails.wants_event_stream)  # an EventSource cannot set headers
def list_events(run_id: str) -> Any:
    query = validate(EventListQuery, query_args(), status=400)
    last_event_id = _last_event_id()  # checked for both forms, used by the stream
    sse = tails.wants_event_stream()
    with services().pool.connection() as conn:
        run = runs.get_run(conn, tenant(), run_id)
        events = [] if sse else runs.list_events(conn, run.id, after=query.after, limit=query.limit)
    if sse:  # outside the `with`: a stream must not hold a pooled connection for its whole life
        return tails.sse_response(run, max(query.after, last_event_id))
    return {"items": [event.to_json() for event in events]}


def _new_run(spec: RunCreate, key: str | None, fp: str | None) -> runs.NewRun:
    """The run to insert: the request's fields, else the task's defaults, else the contract's."""
    task = services().registry.tasks[spec.task]
    limit_key = spec.limit_key or _derived(task.limit_key_of, spec.input)
    dedupe = _dedupe(spec, task)
    start = _delayed_until(spec, dedupe)
    return runs.NewRun(
        tenant=tenant(),
        task=spec.task,
        queue=spec.queue or task.queue or "default",
        input=spec.input,
        priority=spec.priority,
        max_attempts=spec.max_attempts or task.max_attempts or 1,
        backoff=spec.backoff.model_dump() if spec.backoff else task.backoff,
        timeout_s=spec.timeout_s or task.timeout_s,
        metadata=spec.metadata,
        scheduled_for=start,
        delayed=start is not None,
        idempotency_key=key,
        request_fingerprint=fp,
        dedupe=dedupe,
        limit_key=limit_key,
    )


def _dedupe(spec: RunCreate, task: TaskDef) -> runs.Dedupe | None:
    """The request's dedupe field, else the key the task derives from the input (no TTL)."""
    if spec.dedupe is not None:
        return runs.Dedupe(spec.dedupe.key, spec.dedupe.ttl_s, spec.dedupe.debounce_ms)
    key = _derived(task.dedupe_key_of, spec.input)
    return runs.Dedupe(key) if key else None


def _derived(key_of: Callable[[Any], str | None], input: Any) -> str | None:
    """A key the task works out from the input; 422 on `input` when it cannot."""
    try:
        return key_of(input)
    except ValueError as exc:
        raise errors.bad_fields([("input", str(exc))]) from exc


def _delayed_until(spec: RunCreate, dedupe: runs.Dedupe | None) -> datetime | None:
    """When a delayed run may start; None to queue it now (no delay, or run_at already past).
    A debounced run waits its debounce_ms at least."""
    now = datetime.now(UTC)
    start = None
    if spec.delay_ms:
        start = now + timedelta(milliseconds=spec.delay_ms)
    elif spec.run_at is not None and spec.run_at > now:
        start = spec.run_at
    if dedupe is not None and dedupe.debounce_ms is not None:
        debounced = now + timedelta(milliseconds=dedupe.debounce_ms)
        start = max(start, debounced) if start else debounced
    return start


def _enqueue(run: Run) -> None:
    svc = services()
    try:
        dispatch.enqueue(svc.redis, svc.keys, [run])
    except RedisError as exc:  # the scheduler's sweep dispatches it
        log.warning("dispatch.failed", extra={"run_id": run.id, "error": str(exc)})


def _response(result: SubmitResult) -> Response:
    response = Response(result.body, result.status, mimetype="application/json")
    if result.status == 201:
        response.headers["Location"] = f"/v1/runs/{result.run_id}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if result.status == 200:  # only a deduplicated submit answers 200 (and so its replays)
        response.headers["Deduplicated"] = "true"
    return response


def _encode_cursor(run: Run) -> str:
    micros = (run.created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{uuid.UUID(run.id).hex}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    # Every text of RunListQuery's CURSOR_PATTERN is a cursor (so the document can say which):
    # one this API never gave out just starts a page somewhere.
    micros, _, run_hex = cursor.partition(".")
    return EPOCH + timedelta(microseconds=int(micros)), str(uuid.UUID(run_hex))


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        return 0
    if not raw.strip().isdigit() or len(raw.strip()) > 10:
        raise _bad_query("Last-Event-ID", "must be a non-negative integer (an event's seq)")
    return int(raw.strip())


def _bad_query(field: str, message: str) -> ApiError:
    return ApiError(
        400,
        f"invalid {field}: {message}",
        slug="validation",
        errors=[{"field": field, "message": message}],
    )
