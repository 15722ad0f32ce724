"""The scheduler's steps on real Postgres and Redis: schedules, dispatch sweep, retention."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from app import runs
from app.db import jsonb, q
from app.domain import RunStatus
from app.runs import NewRun
from tests.helpers import wait_for
from tests.integration import test_execute as base
from tests.integration.test_execute import (
    TENANT,
    SchedulerThread,
    load,
    submit,
    work,
)

services = base.services  # a fixture
test_settings = base.test_settings  # a fixture


def add_schedule(services, name: str, *, every_s=None, cron=None, first=None) -> None:
    with services.pool.connection() as conn:
        conn.execute(
            q("upsert_schedule"),
            {
                "tenant": TENANT,
                "name": name,
                "task": "demo.echo",
                "input": jsonb({"from": name}),
                "queue": None,
                "cron": cron,
                "every_s": every_s,
                "next_fire_at": first or datetime.now(UTC),
            },
        )


def fired(services, name: str) -> list:
    with services.pool.connection() as conn:
        rows = conn.execute(
            "SELECT * FROM runs WHERE metadata->>'schedule' = %s ORDER BY created_at", (name,)
        ).fetchall()
    return [runs.Run.from_row(r) for r in rows]


def test_every_s_schedule_fires_once_per_firing_with_two_schedulers(services, test_settings, redis):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    add_schedule(services, "tick", every_s=0.5, first=start)
    with SchedulerThread(services), SchedulerThread(services):
        wait_for(lambda: len(fired(services, "tick")) >= 5, 10, message="five firings")
    made = fired(services, "tick")
    times = [r.metadata["fire_time"] for r in made]
    assert len(times) == len(set(times)), "a firing created two runs"
    expected = [start + timedelta(seconds=0.5 * i) for i in range(len(made))]
    assert [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times] == expected
    assert {r.input["from"] for r in made} == {"tick"}
    assert all(r.idempotency_key.startswith("schedule:tick:") for r in made)
    work(test_settings, redis)  # they were enqueued: a worker runs them
    assert all(load(services, r.id).status is RunStatus.SUCCEEDED for r in made)


def test_cron_schedule_fires_and_moves_to_the_next_minute(services, test_settings, redis):
    add_schedule(services, "minutely", cron="* * * * *")
    scheduler = SchedulerThread(services).scheduler
    wait_for(lambda: scheduler.tick() is not None and fired(services, "minutely"), 5)
    with services.pool.connection() as conn:
        row = conn.execute(q("list_schedules"), {"tenant": TENANT}).fetchone()
    nxt = row["next_fire_at"]
    assert nxt > datetime.now(UTC) and nxt.second == 0
    scheduler.tick()
    assert len(fired(services, "minutely")) == 1


def test_a_run_never_dispatched_is_found_by_the_sweep(services, test_settings, redis):
    with services.pool.connection() as conn:  # the web died between its commit and RQ
        run, _ = runs.create_run(
            conn, NewRun(TENANT, "demo.noop", "default", None, 5, 1, None, None, {}, None)
        )
        conn.execute("UPDATE runs SET dispatched_at = now() - interval '1 minute'")
    scheduler = SchedulerThread(services).scheduler
    scheduler.tick()
    assert redis.exists(f"rq:job:{run.id}")
    work(test_settings, redis)
    assert load(services, run.id).status is RunStatus.SUCCEEDED


def test_emptied_redis_gets_every_queued_run_again(services, test_settings, redis):
    made = [submit(services, "demo.noop") for _ in range(5)]
    scheduler = SchedulerThread(services).scheduler
    scheduler.tick()  # sets its sentinel
    redis.delete(
        *redis.keys(f"rq:queue:{test_settings.prefix}*"), *[f"rq:job:{r.id}" for r in made]
    )
    redis.delete(services.keys.dispatch_sentinel)  # what a FLUSHALL does to it
    began = time.monotonic()
    scheduler.tick()
    assert time.monotonic() - began < 1
    work(test_settings, redis)
    assert all(load(services, r.id).status is RunStatus.SUCCEEDED for r in made)


def test_retention_deletes_old_finished_runs_and_their_streams(services, test_settings, redis):
    old, recent = submit(services, "demo.noop"), submit(services, "demo.noop")
    work(test_settings, redis)
    with services.pool.connection() as conn:
        conn.execute(
            "UPDATE runs SET finished_at = now() - interval '8 days' WHERE id = %s", (old.id,)
        )
    redis.xadd(services.keys.run_stream(old.id), {"e": "1"})
    SchedulerThread(services).scheduler.tick()
    with services.pool.connection() as conn:
        assert runs.load_run(conn, old.id) is None
        assert runs.list_events(conn, old.id) == []
        assert runs.load_run(conn, recent.id) is not None
    assert not redis.exists(services.keys.run_stream(old.id))
