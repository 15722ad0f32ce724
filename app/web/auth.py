"""Bearer-token authentication: the token decides the tenant. Tokens are never logged.

The token comes in the `Authorization: Bearer` header; only the routes a browser opens without
being able to set headers (a WebSocket, an EventSource) also take it as `?token=`. An API token
may do anything for its tenant; a scoped token (app.web.scoped) only reads the runs it names.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import TypeVar

from flask import current_app, g, request

from app.domain import Run
from app.web import scoped
from app.web.errors import ApiError

CHALLENGE = {"WWW-Authenticate": "Bearer"}
QUERY_TOKEN = "token"
_WHEN_ATTR = "runlane_query_token_when"
F = TypeVar("F", bound=Callable[..., object])
# What a scoped token may do: GET these views (for the runs of its scope only).
SCOPED_VIEWS = frozenset({
    "runs.get_run", "runs.list_events", "runs.list_runs",
    "tails_ws.run_tail", "tails_ws.run_tail_http", "tails_ws.tenant_tail",
    "tails_ws.tenant_tail_http",
})  # fmt: skip
_READS = frozenset({"GET", "HEAD"})


def tenant_for(token: str | None, tokens: Mapping[str, str]) -> str | None:
    """The tenant of `token`, comparing it with every configured token in constant time."""
    if not token:
        return None
    given = token.encode("utf-8", "surrogateescape")
    found = None
    for candidate, tenant in tokens.items():
        # no early exit: the time taken does not tell which token (or how much of one) matched
        if hmac.compare_digest(given, candidate.encode("utf-8", "surrogateescape")):
            found = tenant
    return found


def authenticate(token: str | None) -> str | None:
    """The tenant of `token` for the current app, or None. Tails call this with ?token= too."""
    return tenant_for(token, current_app.extensions["runlane"].settings.api_tokens)


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def request_token(*, query: bool = False) -> str | None:
    """The request's bearer token; with `query`, `?token=` when there is no header."""
    return bearer_token() or (request.args.get(QUERY_TOKEN) if query else None)


def query_token(when: Callable[[], bool]) -> Callable[[F], F]:
    """Marks a view that also accepts `?token=` for the requests where `when()` holds (the
    EventSource form of a route whose JSON form keeps requiring the header)."""

    def mark(view: F) -> F:
        setattr(view, _WHEN_ATTR, when)
        return view

    return mark


def identify(token: str | None) -> tuple[str, scoped.Scope | None]:
    """(tenant, None) for an API token, (tenant, scope) for a scoped one; else 401."""
    tenant = authenticate(token)
    if tenant is not None:
        return tenant, None
    services = current_app.extensions["runlane"]
    try:
        scope = scoped.read(current_app.extensions["runlane.token_key"], token) if token else None
    except scoped.Expired:
        raise ApiError(
            401, "this token has expired", slug="token-expired", headers=CHALLENGE
        ) from None
    # a tenant whose API tokens are all gone keeps no scoped access either
    if scope is None or scope.tenant not in set(services.settings.api_tokens.values()):
        raise ApiError(
            401, "a valid bearer token is required", slug="unauthorized", headers=CHALLENGE
        )
    return scope.tenant, scope


def require_tenant() -> None:
    """before_request hook of the /v1 blueprints: sets g.tenant (and g.scope) or answers 401,
    or 403 for a scoped token outside what it may do."""
    if request.method == "OPTIONS":
        return  # a CORS preflight carries no token; Flask answers it with the route's methods
    g.tenant, g.scope = identify(request_token(query=_query_token_allowed()))
    if g.scope is not None and (
        request.method not in _READS or request.endpoint not in SCOPED_VIEWS
    ):
        raise forbidden()


def forbidden() -> ApiError:
    return ApiError(
        403, "this token may only read the runs it was made for", slug="forbidden-by-scope"
    )


def permit(run: Run) -> Run:
    """`run`, if the caller may read it (a scoped token: only the runs of its scope); else 403."""
    scope: scoped.Scope | None = g.get("scope")
    if scope is not None and not scope.covers(run.id, run.queue):
        raise forbidden()
    return run


def scoped_queue(asked: str | None) -> str | None:
    """The queue a list or tenant tail is limited to: `asked`, or a queue token's queue (403
    for another queue, and for a token of a list of runs)."""
    scope: scoped.Scope | None = g.get("scope")
    if scope is None:
        return asked
    if scope.queue is None or asked not in (None, scope.queue):
        raise forbidden()
    return scope.queue


def _query_token_allowed() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    when: Callable[[], bool] | None = getattr(view, _WHEN_ATTR, None)
    return when is not None and when()


def tenant() -> str:
    return str(g.tenant)
