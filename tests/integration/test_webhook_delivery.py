"""The webhooks process's parts on real Postgres and real HTTP: the fan-out from numbered
events, retention, retries until failed, two processes sharing the work, and the address check
made again at connect."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app import webhooks
from app.config import Settings
from app.db import q
from app.runs import Conn
from app.services import Services
from tests.helpers import wait_for
from tests.integration.test_execute import SchedulerThread, submit
from tests.webhook_receiver import receiver
from workers.relay import take_batch
from workers.webhook_metrics import WebhookMetrics
from workers.webhooks import RETRY_DELAYS_S, Deliverer, fan_out


@pytest.fixture
def conn(services: Services) -> Iterator[Conn]:
    with services.pool.connection() as conn:
        yield conn


def endpoint(
    conn: Conn,
    url: str = "http://127.0.0.1:9/",
    tenant: str = "alpha",
    events: list[str] | None = None,
    queue: str | None = None,
) -> webhooks.Endpoint:
    return webhooks.create(conn, webhooks.NewEndpoint(tenant, url, events or ["*"], queue))


def deliveries(conn: Conn) -> list[tuple[str, str | None, int | None, str]]:
    rows = conn.execute(
        "SELECT endpoint_id, run_id, seq, event_type FROM webhook_deliveries ORDER BY created_at"
    ).fetchall()
    return [(str(r["endpoint_id"]), r["run_id"] and str(r["run_id"]), r["seq"], r["event_type"])
            for r in rows]  # fmt: skip


def test_fan_out_takes_numbered_events_matching_each_endpoint(
    services: Services, conn: Conn
) -> None:
    before = submit(services)  # before any endpoint: delivered to none
    take_batch(conn)
    every = endpoint(conn)
    finished = endpoint(conn, events=["run.succeeded"])
    other_queue = endpoint(conn, queue="other")
    theirs = endpoint(conn, tenant="beta")
    mine, beta_run = submit(services), submit(services, tenant="beta")
    assert fan_out(conn) == 0 and deliveries(conn) == []  # not numbered yet: not taken
    take_batch(conn)
    assert fan_out(conn) == 2
    assert sorted(deliveries(conn)) == sorted([
        (every.id, mine.id, 1, "run.queued"),
        (theirs.id, beta_run.id, 1, "run.queued"),
    ])  # fmt: skip
    assert fan_out(conn) == 0 and len(deliveries(conn)) == 2  # the cursor moved: no repeats
    conn.execute("UPDATE webhook_cursors SET fanned_tseq = 0")  # a batch made again
    fan_out(conn)
    assert len(deliveries(conn)) == 2  # the unique key holds
    assert before.id not in {d[1] for d in deliveries(conn)}
    assert finished.id and other_queue.id  # matched nothing


def test_deliveries_go_with_runs_deleted_by_retention(services: Services, conn: Conn) -> None:
    made = endpoint(conn)
    run = submit(services)
    take_batch(conn)
    fan_out(conn)
    assert len(deliveries(conn)) == 1
    conn.execute("UPDATE runs SET finished_at = now() - interval '8 days' WHERE id = %s", (run.id,))
    deleted = conn.execute(q("delete_expired_runs"), {"days": 7, "limit": 10}).fetchall()
    assert [str(r["id"]) for r in deleted] == [run.id]
    assert deliveries(conn) == []
    assert webhooks.get(conn, "alpha", made.id) is not None  # the endpoint stays


def test_pings_go_after_the_retention_period(services: Services, conn: Conn) -> None:
    made = endpoint(conn)
    old, recent = webhooks.ping(conn, "alpha", made.id), webhooks.ping(conn, "alpha", made.id)
    conn.execute(
        "UPDATE webhook_deliveries SET created_at = now() - interval '8 days' WHERE id = %s",
        (old,),
    )
    SchedulerThread(services).scheduler.retention(conn)
    assert [d[3] for d in deliveries(conn)] == ["webhook.ping"]
    assert conn.execute("SELECT id FROM webhook_deliveries").fetchone()["id"] == uuid.UUID(recent)


@contextmanager
def delivering(settings: Settings, copies: int = 1, **changes: Any) -> Iterator[list[Deliverer]]:
    """Deliverers running in threads, as that many webhooks processes would."""
    changed = dataclasses.replace(settings, **changes)
    assert changed.database_url
    made = [
        Deliverer(changed.database_url, changed, WebhookMetrics(CollectorRegistry()))
        for _ in range(copies)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=d.run, args=(stop,), daemon=True) for d in made]
    for thread in threads:
        thread.start()
    try:
        yield made
    finally:
        stop.set()
        for thread, deliverer in zip(threads, made, strict=True):
            thread.join(10)
            deliverer.close()


def status(conn: Conn) -> Any:
    row = conn.execute("SELECT status FROM webhook_deliveries").fetchone()
    return row and row["status"]


def counted(deliverer: Deliverer, outcome: str) -> float:
    return deliverer.metrics.deliveries.labels(outcome)._value.get()  # type: ignore[no-any-return]


def test_a_delivery_never_answered_2xx_is_failed_once_its_retries_are_spent(
    settings: Settings, conn: Conn
) -> None:
    with receiver(refuse=lambda event: 1000) as hook:
        made = endpoint(conn, hook.url)
        hook.secret = made.secret
        webhooks.ping(conn, "alpha", made.id)
        # the schedule shrunk to about a second in all
        with delivering(settings, webhooks_allow_private=True, webhooks_retry_scale=1e-5) as (d,):
            wait_for(lambda: status(conn) == "failed", 20, message="the delivery to fail")
            assert counted(d, "failed") == 1
            assert counted(d, "failed_attempt") == len(RETRY_DELAYS_S)
    tried = webhooks.attempts(conn, made.id, 100)
    assert [a.attempt for a in tried] == list(range(len(RETRY_DELAYS_S) + 1, 0, -1))
    assert all(a.status_code == 500 and a.error == "answered 500" for a in tried)
    assert tried[0].next_attempt_at is None and all(a.next_attempt_at for a in tried[1:])
    assert {a.delivery_status for a in tried} == {"failed"}
    assert sum(hook.tries.values()) == len(tried) and hook.bad_signatures == 0


def test_two_processes_make_each_attempt_once(settings: Settings, conn: Conn) -> None:
    with receiver() as hook:
        made = endpoint(conn, hook.url)
        hook.secret = made.secret
        for _ in range(60):
            webhooks.ping(conn, "alpha", made.id)
        with delivering(settings, copies=2, webhooks_allow_private=True) as pair:
            wait_for(lambda: len(hook.unique()) == 60, 20, message="every ping")
            assert all(counted(d, "succeeded") > 0 for d in pair)  # both took part
    assert set(hook.tries.values()) == {1}


def test_a_private_address_is_refused_at_connect_too(settings: Settings, conn: Conn) -> None:
    with receiver() as hook:
        made = endpoint(conn, hook.url)  # made past the API's check (say, DNS changed since)
        webhooks.ping(conn, "alpha", made.id)
        with delivering(settings, webhooks_retry_scale=100.0):
            tried = wait_for(lambda: webhooks.attempts(conn, made.id, 10), 20, message="a try")
    assert tried[0].status_code is None and "non-public address (127.0.0.1)" in str(tried[0].error)
    assert hook.tries == {}
