"""Webhook endpoints: the record, making one (with its secret), listing, deleting, a ping, and
the log of delivery attempts. The webhooks process (workers.webhooks) delivers."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.db import q
from app.domain import INTERNAL, MAYBE_UUID_TEXT, TIME, UUID_TEXT, Record, rfc3339
from app.runs import Conn

PING = "webhook.ping"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # Standard Webhooks: between 24 and 64 bytes


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes one: whsec_ and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class NewEndpoint:
    tenant: str
    url: str
    events: list[str]  # event types, or ["*"]
    queue: str | None


@dataclass(frozen=True)
class Endpoint(Record):
    """An endpoint as stored; clients see its API fields (the secret only when it is made)."""

    id: str = field(metadata=UUID_TEXT)
    url: str
    events: list[str]
    queue: str | None
    created_at: datetime = field(metadata=TIME)
    tenant: str = field(metadata=INTERNAL)
    secret: str = field(metadata=INTERNAL)
    after_tseq: int = field(metadata=INTERNAL)


@dataclass(frozen=True)
class Attempt(Record):
    """One attempt at a delivery, as GET /v1/webhooks/{id}/deliveries lists it."""

    id: int
    delivery_id: str = field(metadata=UUID_TEXT)
    webhook_id: str
    event_type: str
    run_id: str | None = field(metadata=MAYBE_UUID_TEXT)
    seq: int | None
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime = field(metadata=TIME)
    next_attempt_at: datetime | None = field(metadata=TIME)
    delivery_status: str


def message_id(delivery_id: str) -> str:
    """The webhook-id header of a delivery: one per event and endpoint, the same at each retry."""
    return f"msg_{delivery_id.replace('-', '')}"


def create(conn: Conn, new: NewEndpoint) -> Endpoint:
    params = {**new.__dict__, "secret": new_secret()}
    row = conn.execute(q("webhook_create"), params).fetchone()
    assert row is not None  # an INSERT ... SELECT of one row returns it
    return Endpoint.from_row(row)


def list_endpoints(conn: Conn, tenant: str) -> list[Endpoint]:
    return [Endpoint.from_row(row) for row in conn.execute(q("webhook_list"), {"tenant": tenant})]


def get(conn: Conn, tenant: str, endpoint_id: str) -> Endpoint | None:
    row = conn.execute(q("webhook_get"), {"tenant": tenant, "id": endpoint_id}).fetchone()
    return Endpoint.from_row(row) if row else None


def delete(conn: Conn, tenant: str, endpoint_id: str) -> bool:
    """Whether the tenant had that endpoint (now gone, with its deliveries)."""
    params = {"tenant": tenant, "id": endpoint_id}
    return conn.execute(q("webhook_delete"), params).fetchone() is not None


def ping(conn: Conn, tenant: str, endpoint_id: str) -> str | None:
    """Queue a webhook.ping delivery to the endpoint; its delivery id, or None if no endpoint."""
    body = {"type": PING, "at": rfc3339(datetime.now(UTC)), "data": {"webhook": endpoint_id}}
    params = {"tenant": tenant, "id": endpoint_id, "type": PING, "payload": json.dumps(body)}
    row = conn.execute(q("webhook_ping"), params).fetchone()
    return str(row["id"]) if row else None


def attempts(conn: Conn, endpoint_id: str, limit: int) -> list[Attempt]:
    """The endpoint's attempts, newest first (the caller has checked the endpoint is theirs)."""
    rows = conn.execute(q("webhook_attempts"), {"id": endpoint_id, "limit": limit}).fetchall()
    return [
        Attempt.from_row({**row, "webhook_id": message_id(str(row["delivery_id"]))}) for row in rows
    ]
