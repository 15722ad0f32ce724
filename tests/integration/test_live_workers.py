"""Live workers are those heartbeating now: a worker that dies at start-up, before its first
heartbeat, leaves GET /v1/queues' worker counts within LIVENESS_S, as a killed one does."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from flask.testing import FlaskClient
from rq.utils import utcformat

from app.live_workers import LIVENESS_S
from app.services import Services
from runlane.embedded import free_port
from tests.conftest import auth
from tests.helpers import wait_for
from workers.worker import RunlaneWorker


def workers_of(client: FlaskClient, queue: str = "default") -> int:
    response = client.get("/v1/queues", headers=auth())
    assert response.status_code == 200
    counts = {q["name"]: q["workers"] for q in response.get_json()["items"]}
    return counts.get(queue, 0)


def born(services: Services) -> RunlaneWorker:
    """A worker registered as `rq worker` registers it at start-up, not yet heartbeating."""
    worker = RunlaneWorker(
        ["default"],
        connection=services.redis,
        settings=services.settings,
        name=f"{services.keys.prefix}-born",  # the redis fixture's clean-up finds it
    )
    worker.register_birth()
    return worker


def test_a_registration_expires_as_fast_at_birth_as_after_a_heartbeat(client, services):
    worker = born(services)
    assert workers_of(client) == 1
    assert 0 < services.redis.ttl(worker.key) <= LIVENESS_S  # not RQ's worker TTL + 60 s


def test_a_stale_heartbeat_is_not_live_whatever_the_key_expiry(client, services):
    worker = born(services)
    services.redis.expire(worker.key, 3600)  # e.g. written by a worker with RQ's default TTL
    stale = datetime.now(UTC) - timedelta(seconds=LIVENESS_S + 1)
    services.redis.hset(worker.key, "last_heartbeat", utcformat(stale))
    assert workers_of(client) == 0
    assert client.get("/v1/workers", headers=auth()).get_json()["items"] == []


def test_a_worker_killed_during_start_up_leaves_the_count(client, services, stack_factory):
    # Postgres refuses it: the worker registers, then waits for a database connection (its
    # first heartbeat only comes once it has one) until we kill it
    dead_postgres = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    stack = stack_factory()
    proc = stack.start("worker", {"DATABASE_URL": dead_postgres})
    wait_for(lambda: workers_of(client) == 1, 15, interval=0.05, message="its registration")
    seen = time.monotonic()  # at or after its birth, which was its last heartbeat
    stack.kill("worker")
    assert proc.returncode is not None
    # LIVENESS_S after its birth at the latest; a second more for polling over HTTP
    wait_for(lambda: workers_of(client) == 0, LIVENESS_S + 1, interval=0.2, message="it to go")
    print(
        f"\na worker killed at start-up left the count {time.monotonic() - seen:.1f}s after birth"
    )


def test_a_worker_whose_start_up_fails_leaves_the_count_at_once(client, services, stack_factory):
    stack = stack_factory()
    proc = stack.start("worker", {"RUNLANE_TASK_MODULES": "tests.no_such_task_module"})
    assert proc.wait(30) != 0
    assert "tests.no_such_task_module" in stack.logs()  # it died of that, after registering
    assert "Listening on" in stack.logs()
    assert workers_of(client) == 0
