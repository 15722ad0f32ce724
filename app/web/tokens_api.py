"""Scoped tokens (contract §9): POST /v1/tokens, for a tenant's API token only."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from app import runs
from app.domain import rfc3339
from app.web import scoped
from app.web.auth import require_tenant, tenant
from app.web.current import read_json, services, validate
from app.web.errors import ApiError
from app.web.openapi import Reply, documented
from app.web.responses import TokenOut
from app.web.schemas import TokenCreate

bp = Blueprint("tokens", __name__, url_prefix="/v1")
bp.before_request(require_tenant)  # a scoped token is refused here (403): it cannot mint


@bp.post("/tokens")
@documented(
    "Make a read-only token for a browser",
    body=TokenCreate,
    responses={201: Reply("The token", TokenOut), 404: None},
    description="Good only for GET of the named runs (or every run of the queue), their events "
    "and their tails (header or `?token=`), until `expires_at`: 401 after, 403 outside its "
    "scope. Stateless: it cannot be revoked before it expires.",
)
def create_token() -> tuple[dict[str, Any], int]:
    spec = validate(TokenCreate, read_json())
    run_ids = None
    if spec.runs is not None:
        run_ids = list(dict.fromkeys(str(runs.run_uuid(i)) for i in spec.runs))
        with services().pool.connection() as conn:
            known = runs.tenant_run_ids(conn, tenant(), run_ids)
        for index, run_id in enumerate(run_ids):
            if run_id not in known:
                raise ApiError(
                    404,
                    f"runs[{index}]: no such run",
                    slug="run-not-found",
                    errors=[{"field": f"runs[{index}]", "message": "no such run"}],
                )
    token, scope = scoped.mint(
        current_app.extensions["runlane.token_key"],
        tenant(),
        runs=run_ids,
        queue=spec.queue,
        ttl_s=spec.ttl_s,
    )
    return {"token": token, "expires_at": rfc3339(scope.expires)}, 201
