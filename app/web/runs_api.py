"""Runs: submit (idempotently), read, list, cancel, retry, and their event history."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request
from redis import RedisError

from app import dispatch, flows, logs, runs
from app.domain import Run, RunStatus
from app.web import errors, idempotency, tails
from app.web.auth import permit, query_token, require_tenant, scoped_queue, tenant
from app.web.current import (
    idempotency_store,
    metrics,
    query_args,
    read_json,
    relay_nudged,
    services,
    shown,
    shown_all,
    validate,
)
from app.web.errors import ApiError
from app.web.fields import EPOCH
from app.web.new_runs import flow_of, size, submitted_traceparent
from app.web.openapi import (
    CREATED,
    DEDUPLICATED,
    EVENTS,
    FINISHED,
    IDEMPOTENCY_KEY,
    LAST_EVENT_ID,
    RUN_ID,
    Param,
    Reply,
    documented,
)
from app.web.responses import RunBatchOut, RunList, RunOut
from app.web.schemas import EventListQuery, RunBatch, RunCreate, RunListQuery
from app.web.submit import BatchRequest, Ports, SubmitResult, submit
from app.web.submit import submit_batch as submit_batch_runs

log = logs.get("runlane.web")

bp = Blueprint("runs", __name__, url_prefix="/v1")
bp.before_request(require_tenant)

TRACEPARENT = Param(
    "traceparent",
    {"type": "string"},
    "W3C Trace Context: the runs' attempts join this trace (see Tracing in the README); a "
    "malformed value is ignored",
)


@bp.post("/runs")
@documented(
    "Submit a run",
    body=RunCreate,
    headers=[IDEMPOTENCY_KEY, TRACEPARENT],
    responses={201: CREATED, 200: DEDUPLICATED, 409: None},
)
def submit_run() -> Response:
    # Everything that can refuse the request comes before the claim, so refusals leave the
    # Idempotency-Key unused.
    key = idempotency.parse_key(request.headers.get("Idempotency-Key"))
    body = read_json()
    spec = validate(RunCreate, body, registry=services().registry)
    fp = idempotency.fingerprint(request.method, request.path, body) if key else None
    flow = flow_of(spec, key, fp, traceparent=submitted_traceparent())
    ports = Ports.of(services(), idempotency_store(), shown, flow if flow.children else None)
    with _refusing_held_keys():
        result = submit(ports, flow.run)
    relay_nudged()  # a new run's dispatch pipeline nudged; a replay committed nothing
    _count(result)
    return _response(result)


@bp.post("/runs/batch")
@documented(
    "Submit a batch of runs, all or none",
    body=RunBatch,
    headers=[IDEMPOTENCY_KEY, TRACEPARENT],
    responses={201: Reply("The runs, in the order of the items", RunBatchOut), 409: None},
    description="A broken item makes the whole request 422, naming it (`runs[3].priority`). "
    "An item whose dedupe key a live run holds is answered by that run.",
)
def submit_batch() -> Response:
    key = idempotency.parse_key(request.headers.get("Idempotency-Key"))
    body = read_json()
    spec = validate(RunBatch, body, registry=services().registry)
    fp = idempotency.fingerprint(request.method, request.path, body) if key else None
    trace = submitted_traceparent()
    items = [
        flow_of(item, None, None, where=f"runs[{i}].", traceparent=trace)
        for i, item in enumerate(spec.runs)
    ]
    if sum(size(item) for item in items) > flows.MAX_RUNS:
        raise errors.bad_fields([("runs", f"a request makes at most {flows.MAX_RUNS} runs")])
    batch = BatchRequest(tenant(), items, key, fp)
    with _refusing_held_keys():
        result = submit_batch_runs(Ports.of(services(), idempotency_store(), shown), batch)
    relay_nudged()
    _count(result)
    response = Response(result.body, 201, mimetype="application/json")
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/runs/<run_id:run_id>")
@documented("Get a run", path=[RUN_ID], responses={200: Reply("The run", RunOut), 404: None})
def get_run(run_id: str) -> dict[str, Any]:
    with services().pool.connection() as conn:
        run = permit(runs.get_run(conn, tenant(), run_id))
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
            queue=scoped_queue(query.queue),
            task=query.task,
            parent_id=query.parent_id,
            idempotency_key=query.idempotency_key,
            dedupe_key=query.dedupe_key,
            limit=query.limit + 1,  # one more tells whether there is a next page
            before=_decode_cursor(query.cursor) if query.cursor else None,
        )
    page = found[: query.limit]
    more = len(found) > query.limit
    return {
        "items": shown_all(page),
        "next_cursor": _encode_cursor(page[-1]) if more else None,
    }


@bp.post("/runs/<run_id:run_id>/cancel")
@documented(
    "Cancel a run", path=[RUN_ID], responses={200: Reply("The run", RunOut), 404: None, 409: None}
)
def cancel_run(run_id: str) -> dict[str, Any]:
    svc = services()
    with svc.pool.connection() as conn:
        run = runs.request_cancel(conn, tenant(), run_id)
        # a parent's children cancelled with it
        children = flows.after_change(conn, svc.redis, svc.keys, [run])
        if run.children_total:  # its `children` summary, which the cancel's statement lacks
            run = runs.get_run(conn, tenant(), run_id)
    metrics().finished([run, *children])  # a running one ends in its worker, counted there
    if run.status is RunStatus.RUNNING:
        # The worker polls this attempt's flag every few hundred ms (the run's next attempt,
        # after a retry, has a flag of its own); without it (Redis down) it still learns of the
        # request from Postgres at its next heartbeat.
        try:
            dispatch.request_stops(svc.redis, svc.keys, [run])
        except RedisError as exc:
            log.warning("cancel.flag_failed", extra={"run_id": run.id, "error": str(exc)})
    return shown(run)


@bp.post("/runs/<run_id:run_id>/retry")
@documented(
    "Retry a failed or cancelled run",
    path=[RUN_ID],
    responses={200: Reply("The run", RunOut), 404: None, 409: None},
)
def retry_run(run_id: str) -> dict[str, Any]:
    svc = services()
    with svc.pool.connection() as conn:
        run, children = flows.retry(conn, tenant(), run_id)
    _enqueue([run, *children] if run.status is RunStatus.QUEUED else children)
    return shown(run)


@bp.get("/runs/<run_id:run_id>/events")
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
        run = permit(runs.get_run(conn, tenant(), run_id))
        events = [] if sse else runs.list_events(conn, run.id, after=query.after, limit=query.limit)
    if sse:  # outside the `with`: a stream must not hold a pooled connection for its whole life
        return tails.sse_response(run, max(query.after, last_event_id))
    return {"items": [event.to_json() for event in events]}


def _count(result: SubmitResult) -> None:
    """A submit's replay, or the runs it made (per queue: a batch's may be many)."""
    if result.replayed:
        metrics().idempotent_replays.inc()
    for queue, made in Counter(run.queue for run in result.made).items():
        metrics().runs_created.labels(queue).inc(made)


def _enqueue(queued: list[Run]) -> None:
    svc = services()
    try:
        if queued:
            dispatch.enqueue(svc.redis, svc.keys, queued)
        else:  # a parent waiting for its children again: its event still has to go out
            svc.nudge_relay()
    except RedisError as exc:  # the scheduler's sweep dispatches them
        log.warning("dispatch.failed", extra={"runs": len(queued), "error": str(exc)})


@contextmanager
def _refusing_held_keys() -> Iterator[None]:
    """A flow's child whose dedupe key a live run holds: 409 naming the child's field."""
    try:
        yield
    except flows.DedupeKeyHeld as exc:
        message = f"the dedupe key is held by run {exc.holder.id}, which cannot be this child"
        raise ApiError(
            409,
            f"{exc.field}: {message}",
            slug="dedupe-key-held",
            errors=[{"field": exc.field, "message": message}],
        ) from exc


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
