"""app.schedules on real Postgres: create or replace, list, delete, and the firing times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from app import schedules
from app.runs import Conn
from app.schedules import NewSchedule, first_fire_at, next_fire_at
from app.services import Services

NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
HOURLY = NewSchedule(
    tenant="alpha",
    name="hourly",
    task="demo.echo",
    input={"x": [1, 2]},
    queue=None,
    cron="0 * * * *",
    every_s=None,
)


@pytest.fixture
def conn(services: Services) -> Iterator[Conn]:
    with services.pool.connection() as conn:
        yield conn


def test_put_creates_then_replaces_by_name(conn: Conn) -> None:
    made, created = schedules.put_schedule(conn, HOURLY, now=NOW)
    assert created
    assert made.next_fire_at == datetime(2030, 1, 1, 13, tzinfo=UTC)
    assert made.to_json() == {
        "name": "hourly",
        "task": "demo.echo",
        "input": {"x": [1, 2]},
        "queue": None,
        "cron": "0 * * * *",
        "every_s": None,
        "next_fire_at": "2030-01-01T13:00:00.000000Z",
        "created_at": made.to_json()["created_at"],
    }
    every = NewSchedule("alpha", "hourly", "demo.noop", None, "mail", None, 90.0)
    replaced, created = schedules.put_schedule(conn, every, now=NOW)
    assert not created
    assert (replaced.task, replaced.queue, replaced.cron, replaced.every_s) == (
        "demo.noop",
        "mail",
        None,
        90.0,
    )
    assert replaced.next_fire_at == NOW + timedelta(seconds=90)
    assert [s.name for s in schedules.list_schedules(conn, "alpha")] == ["hourly"]


def test_list_and_delete_are_the_tenants_own(conn: Conn) -> None:
    for tenant, name in (("alpha", "b"), ("alpha", "a"), ("beta", "a")):
        schedules.put_schedule(conn, NewSchedule(tenant, name, "demo.echo", None, None, None, 60))
    assert [s.name for s in schedules.list_schedules(conn, "alpha")] == ["a", "b"]
    assert schedules.delete_schedule(conn, "alpha", "a")
    assert not schedules.delete_schedule(conn, "alpha", "a")
    assert [s.name for s in schedules.list_schedules(conn, "alpha")] == ["b"]
    assert [s.tenant for s in schedules.list_schedules(conn, "beta")] == ["beta"]


def test_first_firing_is_the_next_cron_match_or_one_interval_on() -> None:
    assert first_fire_at("*/15 * * * *", None, NOW) == datetime(2030, 1, 1, 12, 15, tzinfo=UTC)
    assert first_fire_at(None, 2.5, NOW) == NOW + timedelta(seconds=2.5)


def test_next_firing_skips_the_ones_a_stopped_scheduler_missed() -> None:
    now = datetime.now(UTC)
    following = next_fire_at(None, 10, now - timedelta(seconds=35))
    assert now < following <= now + timedelta(seconds=5)  # firings 10, 20 and 30 s on missed
    following = next_fire_at("0 * * * *", None, now - timedelta(hours=3))
    assert now < following <= now + timedelta(hours=1) and following.minute == 0
