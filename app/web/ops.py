"""Operations: health and readiness probes, Prometheus metrics, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Blueprint, Response, current_app
from psycopg_pool import PoolTimeout
from redis import RedisError
from redis.exceptions import ReadOnlyError

from app import db, limits, live_workers, logs, queues
from app.web.current import metrics, services
from app.web.errors import problem
from app.web.metrics import Gauges
from app.web.openapi import Reply, document, documented
from app.web.responses import Health

READY_TIMEOUT_S = 2.0
READY_PROBE_TTL_MS = 10_000

log = logs.get("runlane.web")

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@documented("The process is up", responses={200: Reply("Up", Health)}, storage=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
@documented(
    "Redis takes writes, Postgres reachable, schema current",
    responses={200: Reply("Ready", Health)},
)
def readyz() -> Any:
    """Ready when Redis takes a write and Postgres answers with the current schema."""
    svc = services()
    failures = []
    try:
        # a write, not a ping: an old primary after a failover answers pings but refuses writes
        svc.redis.set(svc.keys.ready_probe, "1", px=READY_PROBE_TTL_MS)
    except ReadOnlyError:
        failures.append("Redis refuses writes (a replica, as after a failover)")
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
@documented(
    "Prometheus metrics",
    responses={
        200: Reply("Prometheus text format", content={"text/plain": {"schema": {"type": "string"}}})
    },
    storage=False,
)
def metrics_view() -> Response:
    """Every process's metrics, and gauges read now: each source that cannot be read is left
    out and the rest still answer."""
    svc = services()
    held = depths = workers = None
    try:
        with svc.pool.connection(timeout=1) as conn:
            held = limits.held_counts(conn)
            depths = queues.depths(conn)
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("metrics.postgres_unavailable", extra={"error": str(exc)})
    try:
        workers = live_workers.per_queue(live_workers.live_workers(svc.redis, svc.keys))
    except RedisError as exc:
        log.warning("metrics.redis_unavailable", extra={"error": str(exc)})
    return metrics().exposition(Gauges(held, depths, workers))


@bp.get("/openapi.json")
@documented(
    "This document",
    responses={
        200: Reply("OpenAPI 3.1", content={"application/json": {"schema": {"type": "object"}}})
    },
    storage=False,
)
def openapi_view() -> dict[str, Any]:
    return document(current_app)
