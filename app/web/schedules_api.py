"""Schedules: create or replace, list, delete. The scheduler process fires them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from flask import Blueprint, Response

from app.db import jsonb, q
from app.domain import rfc3339
from app.runs import Conn
from app.web.auth import require_tenant, tenant
from app.web.current import read_json, services, validate
from app.web.errors import ApiError
from app.web.schemas import NAME_PATTERN, ScheduleCreate

bp = Blueprint("schedules", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.post("/schedules")
def put_schedule() -> tuple[dict[str, Any], int]:
    """201 when the name is new, 200 when it replaced the schedule of that name."""
    spec = validate(ScheduleCreate, read_json(), registry=services().registry)
    params = {
        "tenant": tenant(),
        "name": spec.name,
        "task": spec.task,
        "input": jsonb(spec.input),
        "queue": spec.queue,
        "cron": spec.cron,
        "every_s": spec.every_s,
        "next_fire_at": first_fire_at(spec, datetime.now(UTC)),
    }
    (row,) = _query("upsert_schedule", params)
    status = 201 if row["inserted"] else 200
    return _schedule(row), status


@bp.get("/schedules")
def list_schedules() -> dict[str, Any]:
    rows = _query("list_schedules", {"tenant": tenant()})
    return {"items": [_schedule(row) for row in rows]}


@bp.delete("/schedules/<name>")
def delete_schedule(name: str) -> Response:
    # A name no schedule can have (say with a NUL, which Postgres would refuse) is simply absent.
    valid = re.fullmatch(NAME_PATTERN, name) is not None
    if not valid or not _query("delete_schedule", {"tenant": tenant(), "name": name}):
        raise ApiError(404, f"no schedule named {name!r}", slug="schedule-not-found")
    return Response(status=204)


def first_fire_at(spec: ScheduleCreate, now: datetime) -> datetime:
    """The first firing: the next cron match after now, or one interval from now."""
    if spec.cron is not None:
        return croniter(spec.cron, now).get_next(datetime)  # type: ignore[no-any-return]
    assert spec.every_s is not None  # the schema requires exactly one of the two
    return now + timedelta(seconds=spec.every_s)


def _query(name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with services().pool.connection() as conn:
        return _fetch(conn, name, params)


def _fetch(conn: Conn, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return conn.execute(q(name), params).fetchall()


def _schedule(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "task": row["task"],
        "input": row["input"],
        "queue": row["queue"],
        "cron": row["cron"],
        "every_s": row["every_s"],
        "next_fire_at": rfc3339(row["next_fire_at"]),
        "created_at": rfc3339(row["created_at"]),
    }
