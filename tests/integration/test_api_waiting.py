"""Why a run waits (CONTRACT §5.2): the `waiting` field of every run shown, against real Postgres
and Redis, with a real worker registration for "a live worker serves the queue"."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask.testing import FlaskClient
from redis import Redis

from app import attempts
from app.services import Services
from app.waiting import ServedQueues
from runlane.embedded import free_port
from tests.conftest import auth
from tests.helpers import wait_for
from workers.worker import RunlaneWorker

ALPHA = auth("tok-alpha")


def post(client: FlaskClient, **body: Any) -> Any:
    response = client.post("/v1/runs", json={"task": "demo.echo", **body}, headers=ALPHA)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def waiting(client: FlaskClient, run_id: str) -> Any:
    return client.get(f"/v1/runs/{run_id}", headers=ALPHA).get_json()["waiting"]


def serve(services: Services, *queues: str) -> RunlaneWorker:
    """A worker registered as `rq worker` registers itself, heartbeating now."""
    worker = RunlaneWorker(
        list(queues),
        connection=services.redis,
        settings=services.settings,
        name=f"{services.keys.prefix}-w-{'-'.join(queues)}",  # the redis fixture removes it
    )
    worker.register_birth()
    worker.heartbeat()
    return worker


def test_a_queued_run_nobody_serves_says_no_workers_until_a_worker_comes(
    client: FlaskClient, services: Services
) -> None:
    run = post(client, queue="reports")
    assert run["waiting"] == {
        "reason": "no_workers",
        "detail": "no live worker serves queue reports",
        "until": None,
    }
    serve(services, "reports")
    wait_for(lambda: waiting(client, run["id"])["reason"] == "queued", 5, message="the worker seen")
    listed = client.get("/v1/runs", headers=ALPHA).get_json()["items"]
    assert [r["waiting"]["reason"] for r in listed] == ["queued"]


def test_a_paused_queue_wins_over_everything_but_a_delay(
    client: FlaskClient, services: Services
) -> None:
    serve(services, "default")
    run = post(client)
    later = post(client, delay_ms=60_000)
    assert client.post("/v1/queues/default/pause", headers=ALPHA).status_code == 200
    assert waiting(client, run["id"])["reason"] == "paused"
    assert post(client)["waiting"]["reason"] == "paused", "a submit's answer says so too"
    delayed = waiting(client, later["id"])
    assert delayed["reason"] == "delayed" and delayed["until"] == later["scheduled_for"]
    assert client.post("/v1/queues/default/resume", headers=ALPHA).status_code == 200
    assert waiting(client, run["id"])["reason"] == "queued"


def test_between_attempts_a_run_waits_for_its_backoff(
    client: FlaskClient, services: Services
) -> None:
    run = post(client, max_attempts=3, backoff={"type": "fixed", "delay_ms": 60_000})
    with services.pool.connection() as conn:
        [claimed] = attempts.group_commit(
            conn, [attempts.claim_change(run["id"], worker="w", lease_s=30)]
        )
        assert claimed is not None
        assert waiting(client, run["id"]) is None, "a running run does not wait"
        error = {"type": "E", "message": "boom"}
        attempts.group_commit(conn, [attempts.retry_change(claimed, error, 60_000)])
    backoff = waiting(client, run["id"])
    assert backoff["reason"] == "backoff"
    assert datetime.fromisoformat(backoff["until"]) > datetime.fromisoformat(run["created_at"])


def test_a_finished_run_does_not_wait_and_a_retried_one_does(client: FlaskClient) -> None:
    run = post(client)
    done = client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA).get_json()
    assert done["status"] == "cancelled" and done["waiting"] is None
    retried = client.post(f"/v1/runs/{run['id']}/retry", headers=ALPHA).get_json()
    assert retried["status"] == "queued" and retried["waiting"]["reason"] == "no_workers"


def test_served_queues_are_read_once_a_ttl_and_unknown_while_redis_is_away(
    services: Services,
) -> None:
    now = [0.0]
    served = ServedQueues(services.redis, services.keys, ttl_s=1.0, clock=lambda: now[0])
    assert served.get() == frozenset()
    serve(services, "a", "b")
    assert served.get() == frozenset(), "within the TTL the last reading stands"
    now[0] = 1.0
    assert served.get() == frozenset({"a", "b"})
    away = Redis(port=free_port(), socket_connect_timeout=0.2)
    assert ServedQueues(away, services.keys).get() is None, "no_workers is never guessed"
