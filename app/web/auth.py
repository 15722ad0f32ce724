"""Bearer-token authentication: the token decides the tenant. Tokens are never logged.

The token comes in the `Authorization: Bearer` header; only the routes a browser opens without
being able to set headers (a WebSocket, an EventSource) also take it as `?token=`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import TypeVar

from flask import current_app, g, request

from app.web.errors import ApiError

CHALLENGE = {"WWW-Authenticate": "Bearer"}
QUERY_TOKEN = "token"
_WHEN_ATTR = "runlane_query_token_when"
F = TypeVar("F", bound=Callable[..., object])


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


def require_tenant() -> None:
    """before_request hook of the /v1 blueprints: sets g.tenant or answers 401."""
    tenant = authenticate(request_token(query=_query_token_allowed()))
    if tenant is None:
        raise ApiError(
            401, "a valid bearer token is required", slug="unauthorized", headers=CHALLENGE
        )
    g.tenant = tenant


def _query_token_allowed() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    when: Callable[[], bool] | None = getattr(view, _WHEN_ATTR, None)
    return when is not None and when()


def tenant() -> str:
    return str(g.tenant)
