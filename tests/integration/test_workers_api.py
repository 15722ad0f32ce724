"""GET /v1/workers with a real RunlaneWorker running demo.sleep runs of two tenants."""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from rq import Queue, Worker

from app import runs
from app.domain import RunStatus
from app.services import Services, connect_redis
from app.web import create_app
from runlane.embedded import free_port
from tests.conftest import auth
from tests.helpers import wait_for
from tests.integration import test_execute as base
from tests.integration.test_cancel_generations import while_working
from tests.integration.test_execute import submit

services = base.services  # a fixture
ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")


@pytest.fixture
def test_settings(settings):
    return dataclasses.replace(
        settings, task_modules=("tests.tasks",), worker_concurrency=4, queues=("default", "mail")
    )


@pytest.fixture
def web(services) -> FlaskClient:
    return create_app(services=services).test_client()


def workers(web: FlaskClient, headers: dict[str, str]) -> list[dict]:
    response = web.get("/v1/workers", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def status(services: Services, run_id: str) -> RunStatus:
    """Whatever the run's tenant."""
    with services.pool.connection() as conn:
        run = runs.load_run(conn, run_id)
    assert run is not None
    return run.status


def rfc3339_utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def test_a_worker_shows_what_it_serves_and_each_tenant_its_own_runs(
    services, test_settings, redis, web
):
    mine = submit(services, "demo.sleep", {"seconds": 30})
    theirs = submit(services, "demo.sleep", {"seconds": 30}, tenant="beta")
    stranger = Worker([Queue("otherstack.default.p1", connection=redis)], connection=redis)
    stranger.register_birth()  # another stack's worker on the same Redis: not ours to show
    seen: dict[str, list[dict]] = {}

    def body() -> None:
        both = (mine.id, theirs.id)
        running = [RunStatus.RUNNING] * 2
        wait_for(lambda: [status(services, r) for r in both] == running, 10, message="both run")
        seen["alpha"], seen["beta"] = workers(web, ALPHA), workers(web, BETA)
        for run, headers in ((mine, ALPHA), (theirs, BETA)):
            web.post(f"/v1/runs/{run.id}/cancel", headers=headers)
        wait_for(lambda: all(status(services, r).terminal for r in both), 10, message="the end")

    try:
        while_working(test_settings, redis, body)
    finally:
        stranger.register_death()
    [alpha], [beta] = seen["alpha"], seen["beta"]
    assert set(alpha) == {
        "name", "hostname", "pid", "queues", "concurrency", "started_at", "last_heartbeat",
        "running",
    }  # fmt: skip
    with services.pool.connection() as conn:
        assert (
            alpha["name"]
            == conn.execute("SELECT worker FROM runs WHERE id = %s", (mine.id,)).fetchone()[
                "worker"
            ]
        )
    assert (alpha["hostname"], alpha["pid"]) == (socket.gethostname(), os.getpid())
    assert (alpha["queues"], alpha["concurrency"]) == (["default", "mail"], 4)
    started, beat = rfc3339_utc(alpha["started_at"]), rfc3339_utc(alpha["last_heartbeat"])
    now = datetime.now(UTC)
    assert now - timedelta(seconds=60) < started <= beat <= now
    assert alpha["running"] == [mine.id]
    assert beta["running"] == [theirs.id]
    same = ("name", "hostname", "pid", "queues", "concurrency", "started_at")
    assert {k: beta[k] for k in same} == {k: alpha[k] for k in same}


def test_no_workers_no_items(web):
    assert workers(web, ALPHA) == []


def test_redis_away_is_a_503_and_queue_counts_still_answer(services: Services) -> None:
    away = dataclasses.replace(services, redis=connect_redis(f"redis://127.0.0.1:{free_port()}/0"))
    web = create_app(services=away).test_client()
    response = web.get("/v1/workers", headers=ALPHA)
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert web.get("/v1/queues", headers=ALPHA).status_code == 200
