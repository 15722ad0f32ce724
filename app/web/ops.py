"""Operations: health and readiness probes, Prometheus metrics, and the OpenAPI document."""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg
from flask import Blueprint, Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode
from redis import RedisError

from app import db
from app.web import schemas
from app.web.current import metrics, services
from app.web.errors import PROBLEM_JSON, problem

READY_TIMEOUT_S = 2.0

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    """Ready when Redis answers and Postgres answers with the current schema."""
    svc = services()
    failures = []
    try:
        svc.redis.ping()
    except RedisError:
        failures.append("Redis is unreachable")
    try:
        with svc.pool.connection(timeout=READY_TIMEOUT_S) as conn:
            if not db.schema_current(conn):
                failures.append("the database schema is not current")
    except psycopg.OperationalError:
        failures.append("Postgres is unreachable")
    except psycopg.Error:  # e.g. no migrations table yet
        failures.append("the database schema is not current")
    if failures:
        return problem(503, "; ".join(failures), slug="not-ready", headers={"Retry-After": "1"})
    return {"status": "ready"}


@bp.get("/metrics")
def metrics_view() -> Response:
    return metrics().exposition()


@bp.get("/openapi.json")
def openapi_view() -> dict[str, Any]:
    return openapi()


# The OpenAPI 3.1 document, built from the pydantic models of app.web.schemas. Every status a route
# can answer is listed in its responses (tests/integration/test_openapi_agrees.py holds us to it).

Doc = dict[str, Any]
REQUEST_MODELS = (schemas.RunCreate, schemas.ScheduleCreate)
RESPONSE_MODELS = (
    schemas.RunOut,
    schemas.RunList,
    schemas.EventList,
    schemas.TailMessage,
    schemas.QueueOut,
    schemas.QueueList,
    schemas.TaskList,
    schemas.WorkerList,
    schemas.ScheduleOut,
    schemas.ScheduleList,
    schemas.Problem,
    schemas.Health,
)
ERRORS = {
    400: "The body is not JSON, or a header or query parameter is malformed",
    401: "Missing or unknown bearer token",
    404: "No such resource for this tenant",
    409: "The resource's state forbids this, or the same Idempotency-Key is in flight",
    413: "The body is larger than 1 MiB",
    422: "The JSON (or a query parameter) breaks a rule; `errors` names the offending fields",
    426: "A plain HTTP request to a WebSocket route: connect with `Upgrade: websocket`",
    503: "Redis or Postgres is unavailable (or, for /readyz, the schema is not current); "
    "retry after `Retry-After` seconds",
}
HEADER_ONLY = "The token goes in the `Authorization: Bearer` header: only the tails and the "
HEADER_ONLY += "Server-Sent Events form of GET /v1/runs/{id}/events also take it as `?token=`."
QUERY_TOKEN: list[Doc] = [{"bearer": []}, {"token": []}]


@cache
def openapi() -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runlane",
            "version": "1",
            "description": "Redis-native job runner. " + HEADER_ONLY,
        },
        "paths": {**_runs_paths(), **_tail_paths(), **_other_paths(), **_ops_paths()},
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": HEADER_ONLY},
                "token": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The bearer token as a query parameter, for browsers, whose "
                    "WebSocket and EventSource cannot set headers; refused everywhere else.",
                },
            },
        },
        "security": [{"bearer": []}],
    }


def _component_schemas() -> Doc:
    found: Doc = {}
    modes: tuple[tuple[tuple[type[BaseModel], ...], JsonSchemaMode], ...] = (
        (REQUEST_MODELS, "validation"),
        (RESPONSE_MODELS, "serialization"),
    )
    for models, mode in modes:
        for model in models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
            found.update(schema.pop("$defs", {}))
            found[model.__name__] = schema
    return found


def _ref(model: type[BaseModel]) -> Doc:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> Doc:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _op(
    summary: str,
    ok: dict[int, Doc],
    *,
    errors: tuple[int, ...] = (),
    auth: bool = True,
    storage: bool = True,
    **extra: Any,
) -> Doc:
    """An operation; `auth` adds 401, `storage` (it reads Redis or Postgres) adds 503."""
    responses: Doc = {str(status): response for status, response in ok.items()}
    if not auth:
        extra["security"] = []
    implied = ((401,) if auth else ()) + ((503,) if storage else ())
    for status in sorted(set(implied + errors)):
        responses[str(status)] = {
            "description": ERRORS[status],
            "content": {PROBLEM_JSON: {"schema": _ref(schemas.Problem)}},
        }
    return {"summary": summary, "responses": responses, **extra}


def _param(name: str, where: str, schema: Doc, description: str = "") -> Doc:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def _body(model: type[BaseModel]) -> Doc:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


RUN_ID = _param("id", "path", {"type": "string", "format": "uuid"})
RUN: dict[int, Doc] = {200: _json(schemas.RunOut, "The run")}


def _runs_paths() -> Doc:
    return {
        "/v1/runs": {
            "post": _op(
                "Submit a run",
                {201: _json(schemas.RunOut, "Created (or replayed: Idempotent-Replayed: true)")},
                errors=(400, 409, 413, 422),
                parameters=[
                    _param(
                        "Idempotency-Key",
                        "header",
                        {"type": "string", "minLength": 1, "maxLength": 255},
                    )
                ],
                requestBody=_body(schemas.RunCreate),
            ),
            "get": _op(
                "List runs, newest first",
                {200: _json(schemas.RunList, "A page of runs")},
                errors=(400, 422),
                parameters=[
                    _param(
                        "status",
                        "query",
                        {"type": "string", "enum": [s.value for s in schemas.RunStatus]},
                    ),
                    _param("queue", "query", {"type": "string"}),
                    _param("task", "query", {"type": "string"}),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    ),
                    _param("cursor", "query", {"type": "string"}, "next_cursor of the last page"),
                ],
                description="A malformed parameter is 400; one that no stored value can hold "
                "(a NUL character) is 422 naming it.",
            ),
        },
        "/v1/runs/{id}": {"get": _op("Get a run", RUN, errors=(404,), parameters=[RUN_ID])},
        "/v1/runs/{id}/cancel": {
            "post": _op("Cancel a run", RUN, errors=(404, 409), parameters=[RUN_ID])
        },
        "/v1/runs/{id}/retry": {
            "post": _op(
                "Retry a failed or cancelled run", RUN, errors=(404, 409), parameters=[RUN_ID]
            )
        },
        "/v1/runs/{id}/events": {"get": _events_op()},
    }


def _events_op() -> Doc:
    events = {
        "description": "The run's events with seq > after; as Server-Sent Events (id: seq, "
        "event: type) when Accept is text/event-stream, resuming after Last-Event-ID and "
        "ending after the terminal event",
        "content": {
            "application/json": {"schema": _ref(schemas.EventList)},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    finished = {
        "description": "Server-Sent Events only: the run is finished and nothing is after the "
        "cursor (a 204 tells an EventSource to stop reconnecting)"
    }
    return _op(
        "A run's events (JSON history, or Server-Sent Events)",
        {200: events, 204: finished},
        errors=(400, 404, 422),
        parameters=[
            RUN_ID,
            _param("after", "query", {"type": "integer", "minimum": 0, "default": 0}),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
            _param("Last-Event-ID", "header", {"type": "integer", "minimum": 0}),
        ],
        security=QUERY_TOKEN,
        description="`?token=` is accepted for the Server-Sent Events form only; the JSON form "
        "requires the Authorization header.",
    )


def _websocket(summary: str, message: type[BaseModel], params: list[Doc], *, run: bool) -> Doc:
    return _op(
        summary + " (WebSocket; token also accepted as ?token=)",
        {
            101: {
                "description": "Switching Protocols; then one JSON text message per item, "
                "schema " + message.__name__,
                "content": {"application/json": {"schema": _ref(message)}},
            }
        },
        errors=((404,) if run else ()) + (400, 426),
        parameters=params,
        security=QUERY_TOKEN,
        description="Checked in this order, before the upgrade: the token (401)"
        + (", the run (404)" if run else "")
        + ", the query (400); a plain GET without `Upgrade: websocket` then gets 426.",
    )


def _tail_paths() -> Doc:
    return {
        "/v1/runs/{id}/tail": {
            "get": _websocket(
                "Tail a run's events",
                schemas.EventOut,
                [RUN_ID, _param("after", "query", {"type": "integer", "minimum": 0})],
                run=True,
            )
        },
        "/v1/tail": {
            "get": _websocket(
                "Tail every event of the tenant's runs",
                schemas.TailMessage,
                [
                    _param("queue", "query", {"type": "string"}),
                    _param("cursor", "query", {"type": "string"}, "resume after this cursor"),
                ],
                run=False,
            )
        },
    }


def _other_paths() -> Doc:
    queue = [_param("name", "path", {"type": "string", "pattern": schemas.NAME_PATTERN})]
    queue_ok: dict[int, Doc] = {200: _json(schemas.QueueOut, "The queue")}
    return {
        "/v1/queues": {"get": _op("List queues", {200: _json(schemas.QueueList, "Queues")})},
        "/v1/queues/{name}/pause": {
            "post": _op(
                "Pause the caller's runs in a queue", queue_ok, errors=(404,), parameters=queue
            )
        },
        "/v1/queues/{name}/resume": {
            "post": _op(
                "Resume the caller's runs in a queue", queue_ok, errors=(404,), parameters=queue
            )
        },
        "/v1/tasks": {
            "get": _op(
                "List registered tasks", {200: _json(schemas.TaskList, "Tasks")}, storage=False
            )
        },
        "/v1/workers": {
            "get": _op("List live workers", {200: _json(schemas.WorkerList, "Live workers")})
        },
        "/v1/schedules": {
            "post": _op(
                "Create or replace a schedule",
                {
                    201: _json(schemas.ScheduleOut, "Created"),
                    200: _json(schemas.ScheduleOut, "Replaced"),
                },
                errors=(400, 413, 422),
                requestBody=_body(schemas.ScheduleCreate),
            ),
            "get": _op("List schedules", {200: _json(schemas.ScheduleList, "Schedules")}),
        },
        "/v1/schedules/{name}": {
            "delete": _op(
                "Delete a schedule",
                {204: {"description": "Deleted"}},
                errors=(404,),
                parameters=[_param("name", "path", {"type": "string"})],
            )
        },
    }


def _ops_paths() -> Doc:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/healthz": {
            "get": _op(
                "The process is up",
                {200: _json(schemas.Health, "Up")},
                auth=False,
                storage=False,
            )
        },
        "/readyz": {
            "get": _op(
                "Redis and Postgres reachable, schema current",
                {200: _json(schemas.Health, "Ready")},
                auth=False,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {200: {"description": "Prometheus text format", "content": text}},
                auth=False,
                storage=False,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                {200: {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                auth=False,
                storage=False,
            )
        },
    }
