"""Every Postgres connection of the stack killed mid-load (what a Postgres restart or failover does
to its clients): no process exits, no attempt is lost or run twice, tails stay complete, and a
submit answered 503 meanwhile succeeds when retried with its Idempotency-Key."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from app.config import Settings
from runlane.client import ApiError, Client
from tests.e2e.outage import assert_came_through
from tests.helpers import Stack, wait_for
from tests.tails import Tail

pytestmark = pytest.mark.e2e


def kill_connections(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_postgres_connections_killed_mid_load(
    stack_factory: Callable[..., Stack], settings: Settings, concurrency: str
) -> None:
    stack = stack_factory(RUNLANE_WORKER_CONCURRENCY=concurrency).start_all()
    api = Client(stack.base, "tok-alpha", timeout=10)
    long_runs = [api.submit("demo.progress", {"steps": 40, "interval_ms": 50}) for _ in range(3)]
    tails = [Tail(stack.base, run["id"]).start() for run in long_runs]
    made: list[dict[str, Any]] = []
    refused: list[str] = []
    stop = threading.Event()

    def submit_while_it_happens() -> None:
        while not stop.is_set():
            key = f"k{len(made) + len(refused)}"
            try:
                made.append(api.submit("demo.noop", {"key": key}, idempotency_key=key))
            except ApiError as exc:
                assert exc.status == 503, exc
                refused.append(key)

    submitter = threading.Thread(target=submit_while_it_happens)
    submitter.start()
    try:
        wait_for(lambda: len(made) >= 50, 20, message="submits before the kill")
        assert kill_connections(str(settings.database_url)) > 0
        count = len(made)
        wait_for(lambda: len(made) >= count + 100, 20, message="submits after the kill")
    finally:
        stop.set()
        submitter.join()
    made += [api.submit("demo.noop", {"key": key}, idempotency_key=key) for key in refused]

    assert_came_through(stack, api, long_runs + made, tails)
