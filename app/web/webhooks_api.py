"""Webhooks (contract §8): make, list and delete endpoints, list an endpoint's delivery attempts,
and queue a ping. The webhooks process (workers.webhooks) delivers."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response

from app import webhooks
from app.web.auth import require_tenant, tenant
from app.web.current import query_args, read_json, services, validate
from app.web.errors import ApiError, bad_fields
from app.web.openapi import Param, Reply, documented
from app.web.responses import (
    WebhookAttemptList,
    WebhookCreated,
    WebhookList,
    WebhookPingOut,
)
from app.web.schemas import UUID_PATTERN, WebhookCreate, WebhookDeliveriesQuery
from app.webhook_urls import UrlRefused, check

bp = Blueprint("webhooks", __name__, url_prefix="/v1")
bp.before_request(require_tenant)

WEBHOOK_ID = Param("webhook_id", {"type": "string", "format": "uuid"}, "the endpoint's id")
CANONICAL_UUID = re.compile(UUID_PATTERN)


@bp.post("/webhooks")
@documented(
    "Make a webhook endpoint",
    description="Every committed event of the caller's runs that matches `events` (and `queue`) "
    "is POSTed to `url`, signed per Standard Webhooks with `secret`, which only this answer "
    "shows. A URL that is not http(s), or whose host resolves to a loopback, private or "
    "link-local address, is refused (422 naming `url`).",
    body=WebhookCreate,
    responses={201: Reply("Created", WebhookCreated)},
)
def create_webhook() -> tuple[dict[str, Any], int]:
    spec = validate(WebhookCreate, read_json())
    try:
        check(spec.url, allow_private=services().settings.webhooks_allow_private)
    except UrlRefused as exc:
        raise bad_fields([("url", str(exc))]) from None
    new = webhooks.NewEndpoint(tenant(), spec.url, [str(e) for e in spec.events], spec.queue)
    with services().pool.connection() as conn:
        endpoint = webhooks.create(conn, new)
    return {**endpoint.to_json(), "secret": endpoint.secret}, 201


@bp.get("/webhooks")
@documented("List webhook endpoints", responses={200: Reply("Endpoints", WebhookList)})
def list_webhooks() -> dict[str, Any]:
    with services().pool.connection() as conn:
        found = webhooks.list_endpoints(conn, tenant())
    return {"items": [endpoint.to_json() for endpoint in found]}


@bp.delete("/webhooks/<webhook_id>")
@documented(
    "Delete a webhook endpoint (and its pending deliveries)",
    path=[WEBHOOK_ID],
    responses={204: Reply("Deleted"), 404: None},
)
def delete_webhook(webhook_id: str) -> Response:
    with services().pool.connection() as conn:
        if _valid(webhook_id) and webhooks.delete(conn, tenant(), webhook_id):
            return Response(status=204)
    raise _not_found()


@bp.get("/webhooks/<webhook_id>/deliveries")
@documented(
    "List an endpoint's delivery attempts, newest first",
    path=[WEBHOOK_ID],
    query=WebhookDeliveriesQuery,
    responses={200: Reply("Attempts", WebhookAttemptList), 400: None, 404: None},
)
def list_deliveries(webhook_id: str) -> dict[str, Any]:
    query = validate(WebhookDeliveriesQuery, query_args(), status=400)
    with services().pool.connection() as conn:
        if not _valid(webhook_id) or webhooks.get(conn, tenant(), webhook_id) is None:
            raise _not_found()
        found = webhooks.attempts(conn, webhook_id, query.limit)
    return {"items": [attempt.to_json() for attempt in found]}


@bp.post("/webhooks/<webhook_id>/test")
@documented(
    "Queue a webhook.ping delivery to the endpoint",
    path=[WEBHOOK_ID],
    responses={202: Reply("Queued", WebhookPingOut), 404: None},
)
def ping_webhook(webhook_id: str) -> tuple[dict[str, Any], int]:
    with services().pool.connection() as conn:
        delivery = webhooks.ping(conn, tenant(), webhook_id) if _valid(webhook_id) else None
    if delivery is None:
        raise _not_found()
    return {"delivery_id": delivery, "webhook_id": webhooks.message_id(delivery)}, 202


def _valid(webhook_id: str) -> bool:
    # An id that is no uuid names no endpoint (Postgres would refuse it as a uuid).
    return CANONICAL_UUID.fullmatch(webhook_id) is not None


def _not_found() -> ApiError:
    return ApiError(404, "no such webhook endpoint", slug="webhook-not-found")
