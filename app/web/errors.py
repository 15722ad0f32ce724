"""The one place where failures become application/problem+json responses (RFC 9457).

Views raise domain exceptions or ApiError; every HTTP error Flask or Werkzeug produces (unknown
route, 405, 413, ...) goes through here too, and anything unexpected becomes a logged 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import psycopg
import redis
from flask import Flask, Response, current_app, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException
from wsproto.utilities import RemoteProtocolError

from app import logs
from app.runs import RunConflict, RunNotFound
from app.web.schemas import MAX_BODY_BYTES

PROBLEM_JSON = "application/problem+json"
log = logs.get("runlane.web")

# A database error is translated once, here, by the name of the constraint it broke.
CONSTRAINTS: dict[str, tuple[int, str]] = {
    "runs_tenant_idempotency_key_key": (409, "this Idempotency-Key already belongs to a run"),
    "runs_priority_check": (422, "priority must be between 1 and 10"),
    "runs_status_check": (422, "not a run status"),
    "schedules_one_trigger_check": (422, "give exactly one of cron and every_s"),
}


class ApiError(Exception):
    """A request the API refuses, with the problem to answer."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, str]] | None = None,
) -> Response:
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        # "about:blank" means the status says it all; our own problems get a type of their own
        "type": f"https://runlane.dev/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = list(errors)
    return Response(json.dumps(body), status, headers=dict(headers or {}), mimetype=PROBLEM_JSON)


def field_name(loc: Sequence[str | int]) -> str:
    """A field as the API names it: `backoff.delay_ms`, `runs[3].priority`, `body` for the whole."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """The offending fields of a pydantic error, as `{"field": "backoff.delay_ms", "message"}`."""
    return [
        {"field": field_name(error["loc"]), "message": error["msg"].removeprefix("Value error, ")}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def invalid(exc: ValidationError, status: int = 422) -> ApiError:
    return _fields_problem(status, field_errors(exc))


def unstorable(found: Sequence[tuple[str, str]]) -> ApiError:
    """422 for values that no schema can accept because Postgres cannot store them (NUL, lone
    surrogates) or JSON cannot carry them (1e400): `found` is (field, message) pairs."""
    return bad_fields(found)


def bad_fields(found: Sequence[tuple[str, str]]) -> ApiError:
    """422 naming each (field, message) that a rule outside the schemas refused."""
    return _fields_problem(422, [{"field": field, "message": message} for field, message in found])


def _fields_problem(status: int, errors: list[dict[str, str]]) -> ApiError:
    fields = ", ".join(dict.fromkeys(error["field"] for error in errors))
    return ApiError(status, f"invalid fields: {fields}", slug="validation", errors=errors)


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationError, lambda exc: _api_error(invalid(exc)))
    app.register_error_handler(RunNotFound, _not_found)
    app.register_error_handler(RunConflict, _conflict)
    app.register_error_handler(psycopg.Error, _database_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RemoteProtocolError, _bad_handshake)
    app.register_error_handler(Exception, _unexpected)


def _api_error(exc: ApiError) -> Response:
    return problem(exc.status, exc.detail, slug=exc.slug, headers=exc.headers, errors=exc.errors)


def _not_found(exc: RunNotFound) -> Response:
    return problem(404, "no such run", slug="run-not-found")


def _conflict(exc: RunConflict) -> Response:
    return problem(409, exc.detail, slug="run-state-conflict")


def _database_error(exc: psycopg.Error) -> Response:
    constraint = exc.diag.constraint_name if exc.diag else None
    if constraint in CONSTRAINTS:
        status, detail = CONSTRAINTS[constraint]
        return problem(status, detail, slug="constraint")
    if isinstance(exc, psycopg.errors.DataError):
        # a value Postgres cannot hold (e.g. a timestamp out of its range) is the client's error
        return problem(422, "a value is out of range", slug="validation")
    if isinstance(exc, psycopg.OperationalError):
        log.warning("database.unavailable", extra={"error": type(exc).__name__})
        # After a Postgres restart every idle pooled connection is dead: test and replace them
        # now, so that one request gets this 503 rather than one per pooled connection.
        current_app.extensions["runlane"].pool.check()
        return problem(503, "the database is unavailable", headers={"Retry-After": "1"})
    return _unexpected(exc)


def _redis_error(exc: redis.RedisError) -> Response:
    log.warning("redis.unavailable", extra={"error": type(exc).__name__})
    return problem(503, "Redis is unavailable", headers={"Retry-After": "1"})


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc  # routing redirects (e.g. a missing trailing slash) are not errors
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    detail = exc.description or HTTPStatus(exc.code).description
    if exc.code == 413:
        detail = f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB"
    return problem(exc.code, detail, headers=headers)


def _bad_handshake(exc: RemoteProtocolError) -> Response:
    """A WebSocket upgrade request that wsproto refuses (no key, an unknown version): nothing has
    been sent yet, so it is answered as wsproto suggests (400, or 426 naming version 13)."""
    status = getattr(exc.event_hint, "status_code", 400)
    headers = {
        _text(name): _text(value) for name, value in getattr(exc.event_hint, "headers", None) or []
    }
    status = status if 400 <= status < 500 else 400
    return problem(
        status, f"not a WebSocket handshake: {exc}", slug="bad-handshake", headers=headers
    )


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _unexpected(exc: Exception) -> Response:
    log.error(
        "http.unexpected_error",
        exc_info=exc,
        extra={"method": request.method, "path": request.path},
    )
    return problem(500, "an unexpected error occurred", slug="internal")
