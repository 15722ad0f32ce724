"""Runs: submit (idempotently), read, list, cancel, retry, and their event history."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request
from redis import RedisError

from app import dispatch, logs, runs
from app.domain import Run, RunStatus
from app.web import idempotency, tails
from app.web.auth import query_token, require_tenant, tenant
from app.web.current import (
    idempotency_store,
    metrics,
    query_args,
    read_json,
    services,
    validate,
)
from app.web.errors import ApiError
from app.web.idempotency import Claim
from app.web.schemas import EventListQuery, RunCreate, RunListQuery

CANCEL_FLAG_TTL_S = 24 * 3600
log = logs.get("runlane.web")

bp = Blueprint("runs", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.post("/runs")
def submit_run() -> Response:
    # Everything that can refuse the request comes before the claim, so refusals leave the
    # Idempotency-Key unused.
    key = idempotency.parse_key(request.headers.get("Idempotency-Key"))
    body = read_json()
    spec = validate(RunCreate, body, registry=services().registry)
    fp = idempotency.fingerprint(request.method, request.path, body) if key else None
    return _submit(_new_run(spec, key, fp))


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> dict[str, Any]:
    with services().pool.connection() as conn:
        return runs.get_run(conn, tenant(), run_id).to_json()


@bp.get("/runs")
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
    return {
        "items": [run.to_json() for run in page],
        "next_cursor": _encode_cursor(page[-1]) if more else None,
    }


@bp.post("/runs/<run_id>/cancel")
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
    return run.to_json()


@bp.post("/runs/<run_id>/retry")
def retry_run(run_id: str) -> dict[str, Any]:
    svc = services()
    with svc.pool.connection() as conn:
        run = runs.retry_run(conn, tenant(), run_id)
    _enqueue(run)
    return run.to_json()


@bp.get("/runs/<run_id>/events")
@query_token(when=tails.wants_event_stream)  # an EventSource cannot set headers
def list_events(run_id: str) -> Any:
    query = validate(EventListQuery, query_args(), status=400)
    sse = tails.wants_event_stream()
    with services().pool.connection() as conn:
        run = runs.get_run(conn, tenant(), run_id)
        events = [] if sse else runs.list_events(conn, run.id, after=query.after, limit=query.limit)
    if sse:  # outside the `with`: a stream must not hold a pooled connection for its whole life
        return tails.sse_response(run, max(query.after, _last_event_id()))
    return {"items": [event.to_json() for event in events]}


def _new_run(spec: RunCreate, key: str | None, fp: str | None) -> runs.NewRun:
    """The run to insert: the request's fields, else the task's defaults, else the contract's."""
    task = services().registry.tasks[spec.task]
    start = _delayed_until(spec)
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
    )


def _delayed_until(spec: RunCreate) -> datetime | None:
    """When a delayed run may start; None to queue it now (no delay, or run_at already past)."""
    now = datetime.now(UTC)
    if spec.delay_ms:
        return now + timedelta(milliseconds=spec.delay_ms)
    if spec.run_at is not None and spec.run_at > now:
        return spec.run_at
    return None


def _submit(new: runs.NewRun) -> Response:
    store = idempotency_store()
    claim = Claim.UNAVAILABLE
    if new.idempotency_key is not None:
        outcome = store.claim(new.tenant, new.idempotency_key, str(new.request_fingerprint))
        if outcome.claim is Claim.REPLAY:
            return _replay(outcome.status, outcome.body)
        if outcome.claim is Claim.IN_FLIGHT:
            raise idempotency.in_flight()
        if outcome.claim is Claim.MISMATCH:
            raise idempotency.mismatch()
        claim = outcome.claim
    try:
        with services().pool.connection() as conn:
            run, created = runs.create_run(conn, new)
    except BaseException:
        if claim is Claim.CLAIMED:  # no run was created: the key must stay usable
            store.release(new.tenant, str(new.idempotency_key), str(new.request_fingerprint))
        raise
    if not created:
        return _existing(run, new, claimed=claim is Claim.CLAIMED)
    body = _dump(run.to_json())
    _dispatch_and_store(run, new, body, claimed=claim is Claim.CLAIMED)
    metrics().runs_created.labels(run.queue).inc()
    return _response(201, body, run.id)


def _existing(run: Run, new: runs.NewRun, *, claimed: bool) -> Response:
    """Redis had forgotten the key (or is down) but Postgres holds a run with it."""
    store = idempotency_store()
    key, fp = str(new.idempotency_key), str(new.request_fingerprint)
    if run.request_fingerprint != fp:
        if claimed:
            store.release(new.tenant, key, fp)
        raise idempotency.mismatch()
    body = _dump(run.to_json())
    if claimed:
        try:
            store.store(new.tenant, key, fp, 201, body)
        except RedisError as exc:  # the claim's lease runs out; Postgres answers again then
            log.warning("idempotency.store_failed", extra={"run_id": run.id, "error": str(exc)})
    return _response(201, body, run.id, replayed=True)


def _dispatch_and_store(run: Run, new: runs.NewRun, body: bytes, *, claimed: bool) -> None:
    """Hands the run to RQ and stores the idempotent response, in one round trip.

    Delayed runs are not enqueued: the scheduler promotes them when due. If Redis fails here the
    run is committed anyway, and the scheduler's sweep dispatches runs that never reached RQ.
    """
    svc, store = services(), idempotency_store()
    key, fp = str(new.idempotency_key), str(new.request_fingerprint)
    pipe = svc.redis.pipeline(transaction=False)
    try:
        if run.status is RunStatus.QUEUED:  # (RQ asks Redis its version once per client)
            dispatch.enqueue(svc.redis, svc.keys, [run], pipeline=pipe)
        if claimed:
            store.store(new.tenant, key, fp, 201, body, pipeline=pipe)  # executes the pipeline
        else:
            pipe.execute()
    except RedisError as exc:
        log.warning("submit.redis_failed", extra={"run_id": run.id, "error": str(exc)})


def _enqueue(run: Run) -> None:
    svc = services()
    try:
        dispatch.enqueue(svc.redis, svc.keys, [run])
    except RedisError as exc:  # the scheduler's sweep dispatches it
        log.warning("dispatch.failed", extra={"run_id": run.id, "error": str(exc)})


def _response(status: int, body: bytes, run_id: str, *, replayed: bool = False) -> Response:
    response = Response(body, status, mimetype="application/json")
    if status == 201:
        response.headers["Location"] = f"/v1/runs/{run_id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
        metrics().idempotent_replays.inc()
    return response


def _replay(status: int, body: bytes) -> Response:
    """A response stored in Redis, sent again as it was first sent."""
    run_id = json.loads(body).get("id", "") if status == 201 else ""
    return _response(status, body, run_id, replayed=True)


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _encode_cursor(run: Run) -> str:
    raw = f"{run.created_at.isoformat()}|{run.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, run_id = raw.partition("|")
        return datetime.fromisoformat(created), str(uuid.UUID(run_id))
    except (ValueError, binascii.Error) as exc:
        raise _bad_query("cursor", "not a cursor this API gave out") from exc


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
