"""Bearer-token authentication: the token decides the tenant. Tokens are never logged."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from flask import current_app, g, request

from app.errors import ApiError

CHALLENGE = {"WWW-Authenticate": "Bearer"}


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


def require_tenant() -> None:
    """before_request hook of the /v1 blueprints: sets g.tenant or answers 401."""
    tenant = authenticate(bearer_token())
    if tenant is None:
        raise ApiError(
            401, "a valid bearer token is required", slug="unauthorized", headers=CHALLENGE
        )
    g.tenant = tenant


def tenant() -> str:
    return str(g.tenant)
