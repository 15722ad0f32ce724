"""Schedules: the record, create-or-replace, list, delete, and when a schedule fires.

The API manages them (app.web.schedules_api); the scheduler process fires them
(workers.scheduler), and both take their firing times from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from app.db import jsonb, q
from app.domain import INTERNAL, TIME, Record
from app.runs import Conn


@dataclass(frozen=True)
class NewSchedule:
    tenant: str
    name: str
    task: str
    input: Any
    queue: str | None
    cron: str | None  # exactly one of cron and every_s
    every_s: float | None


@dataclass(frozen=True)
class Schedule(Record):
    """A schedule as stored; its API fields are what clients see (app.web.responses.ScheduleOut)."""

    tenant: str = field(metadata=INTERNAL)
    name: str
    task: str
    input: Any
    queue: str | None
    cron: str | None
    every_s: float | None
    next_fire_at: datetime = field(metadata=TIME)
    created_at: datetime = field(metadata=TIME)


def put_schedule(
    conn: Conn, new: NewSchedule, *, now: datetime | None = None
) -> tuple[Schedule, bool]:
    """Create the schedule, or replace the tenant's schedule of that name (firing times too);
    (schedule, True) when the name was new."""
    first = first_fire_at(new.cron, new.every_s, now or datetime.now(UTC))
    row = conn.execute(
        q("upsert_schedule"),
        {
            "tenant": new.tenant,
            "name": new.name,
            "task": new.task,
            "input": jsonb(new.input),
            "queue": new.queue,
            "cron": new.cron,
            "every_s": new.every_s,
            "next_fire_at": first,
        },
    ).fetchone()
    assert row is not None  # an upsert always returns its row
    return Schedule.from_row(row), bool(row["inserted"])


def list_schedules(conn: Conn, tenant: str) -> list[Schedule]:
    """The tenant's schedules by name."""
    return [Schedule.from_row(row) for row in conn.execute(q("list_schedules"), {"tenant": tenant})]


def delete_schedule(conn: Conn, tenant: str, name: str) -> bool:
    """Whether the tenant had a schedule of that name (now gone)."""
    params = {"tenant": tenant, "name": name}
    return conn.execute(q("delete_schedule"), params).fetchone() is not None


def first_fire_at(cron: str | None, every_s: float | None, now: datetime) -> datetime:
    """The first firing: the next cron match after now, or one interval from now."""
    if cron is not None:
        return croniter(cron, now).get_next(datetime)  # type: ignore[no-any-return]
    assert every_s is not None  # a schedule has exactly one of the two
    return now + timedelta(seconds=every_s)


def next_fire_at(cron: str | None, every_s: float | None, fired_at: datetime) -> datetime:
    """The firing after `fired_at`, skipping any that a stopped scheduler missed (like BullMQ)."""
    now = datetime.now(fired_at.tzinfo)
    if every_s:
        step = timedelta(seconds=every_s)
        missed = max(0, math.floor((now - fired_at) / step))
        return fired_at + step * (missed + 1)
    base = max(fired_at, now)
    following: datetime = croniter(cron or "* * * * *", base).get_next(datetime)
    return following
