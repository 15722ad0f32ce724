"""Schedules: create or replace, list, delete. The scheduler process fires them."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response

from app import schedules
from app.web.auth import require_tenant, tenant
from app.web.current import read_json, services, validate
from app.web.errors import ApiError
from app.web.openapi import NAME, Reply, documented
from app.web.responses import ScheduleList, ScheduleOut
from app.web.schemas import NAME_PATTERN, ScheduleCreate

bp = Blueprint("schedules", __name__, url_prefix="/v1")
bp.before_request(require_tenant)


@bp.post("/schedules")
@documented(
    "Create or replace a schedule",
    body=ScheduleCreate,
    responses={201: Reply("Created", ScheduleOut), 200: Reply("Replaced", ScheduleOut)},
)
def put_schedule() -> tuple[dict[str, Any], int]:
    """201 when the name is new, 200 when it replaced the schedule of that name."""
    spec = validate(ScheduleCreate, read_json(), registry=services().registry)
    new = schedules.NewSchedule(
        tenant=tenant(),
        name=spec.name,
        task=spec.task,
        input=spec.input,
        queue=spec.queue,
        cron=spec.cron,
        every_s=spec.every_s,
    )
    with services().pool.connection() as conn:
        schedule, created = schedules.put_schedule(conn, new)
    return schedule.to_json(), 201 if created else 200


@bp.get("/schedules")
@documented("List schedules", responses={200: Reply("Schedules", ScheduleList)})
def list_schedules() -> dict[str, Any]:
    with services().pool.connection() as conn:
        found = schedules.list_schedules(conn, tenant())
    return {"items": [schedule.to_json() for schedule in found]}


@bp.delete("/schedules/<name>")
@documented("Delete a schedule", path=[NAME], responses={204: Reply("Deleted"), 404: None})
def delete_schedule(name: str) -> Response:
    # A name no schedule can have (say with a NUL, which Postgres would refuse) is simply absent.
    if re.fullmatch(NAME_PATTERN, name) is not None:
        with services().pool.connection() as conn:
            if schedules.delete_schedule(conn, tenant(), name):
                return Response(status=204)
    raise ApiError(404, f"no schedule named {name!r}", slug="schedule-not-found")
