"""Queues (counts, pause, resume, live workers), tasks and schedules, on real Postgres and Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from rq import Queue, Worker

from app import attempts
from app.services import Services
from tests.integration.api import ALPHA, BETA, submit


def queues(client: FlaskClient, headers: dict[str, str] = ALPHA) -> dict[str, Any]:
    response = client.get("/v1/queues", headers=headers)
    assert response.status_code == 200
    return {queue["name"]: queue for queue in response.get_json()["items"]}


def test_queues_show_the_callers_counts(client: FlaskClient, services: Services) -> None:
    submit(client)
    submit(client)
    submit(client, queue="mail", delay_ms=60_000)
    cancelled = submit(client, queue="mail")
    client.post(f"/v1/runs/{cancelled['id']}/cancel", headers=ALPHA)
    submit(client, headers=BETA, queue="beta-only")

    seen = queues(client)
    assert set(seen) == {"default", "mail"}
    assert seen["default"].pop("recent")["window_s"] == 600
    assert seen["default"] == {
        "name": "default",
        "paused": False,
        "workers": 0,
        "counts": {"waiting": 0, "queued": 2, "delayed": 0, "running": 0, "succeeded": 0,
                   "failed": 0, "cancelled": 0},
        "counts_estimated": [],
        "limits": {"concurrency": None, "rate": None, "key_concurrency": None, "key_rate": None},
    }  # fmt: skip
    assert seen["mail"]["counts"]["delayed"] == 1
    assert seen["mail"]["counts"]["cancelled"] == 1
    assert set(queues(client, BETA)) == {"beta-only"}


def test_queues_count_live_workers_of_this_stack(client: FlaskClient, services: Services) -> None:
    names = services.keys.rq_queues("emails")
    worker = Worker(
        [Queue(name, connection=services.redis) for name in names],
        connection=services.redis,
        name=f"{services.keys.prefix}-{uuid.uuid4().hex[:6]}",
    )
    stranger = Worker(
        [Queue("otherstack.emails.p1", connection=services.redis)],
        connection=services.redis,
        name=f"{services.keys.prefix}-stranger",
    )
    worker.register_birth()
    stranger.register_birth()
    try:
        seen = queues(client)
        assert seen["emails"]["workers"] == 1
        assert seen["emails"]["counts"]["queued"] == 0
        assert set(seen) == {"emails"}
    finally:
        worker.register_death()
        stranger.register_death()
    assert queues(client) == {}


def test_pause_and_resume_act_on_the_callers_runs_only(
    client: FlaskClient, services: Services
) -> None:
    mine = submit(client, queue="jobs")
    submit(client, headers=BETA, queue="jobs")
    paused = client.post("/v1/queues/jobs/pause", headers=ALPHA)
    assert paused.status_code == 200
    assert paused.get_json()["paused"] is True
    assert paused.get_json()["counts"]["queued"] == 1
    assert client.post("/v1/queues/jobs/pause", headers=ALPHA).status_code == 200  # idempotent
    assert queues(client)["jobs"]["paused"] is True
    assert queues(client, BETA)["jobs"]["paused"] is False

    with services.pool.connection() as conn:  # workers refuse to start the caller's paused runs
        assert (
            attempts.group_commit(conn, [attempts.claim_change(mine["id"], worker="w", lease_s=5)])[
                0
            ]
            is None
        )
    rq_queue = Queue(services.keys.rq_queue("jobs", 5), connection=services.redis)
    rq_queue.empty()  # as if a worker had dropped the job

    resumed = client.post("/v1/queues/jobs/resume", headers=ALPHA)
    assert resumed.status_code == 200
    assert resumed.get_json()["paused"] is False
    assert rq_queue.job_ids == [mine["id"]]


def test_pausing_a_queue_with_no_runs_yet(client: FlaskClient) -> None:
    body = client.post("/v1/queues/later/pause", headers=ALPHA).get_json()
    minutes = body.pop("recent")["minutes"]
    assert len(minutes) == 10
    assert all(m["succeeded"] == m["failed"] == m["cancelled"] == 0 for m in minutes)
    assert body == {
        "name": "later",
        "paused": True,
        "workers": 0,
        "counts": dict.fromkeys(
            ("waiting", "queued", "delayed", "running", "succeeded", "failed", "cancelled"), 0
        ),
        "counts_estimated": [],
        "limits": dict.fromkeys(("concurrency", "rate", "key_concurrency", "key_rate")),
    }
    assert queues(client)["later"]["paused"] is True


def test_bad_queue_names_are_404(client: FlaskClient) -> None:
    response = client.post("/v1/queues/bad%20name/pause", headers=ALPHA)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_queue_routes_need_a_token(client: FlaskClient) -> None:
    for method, path in (("get", "/v1/queues"), ("post", "/v1/queues/x/pause"),
                         ("get", "/v1/tasks"), ("get", "/v1/schedules")):  # fmt: skip
        assert getattr(client, method)(path).status_code == 401


def test_tasks_list_the_registry_with_defaults(client: FlaskClient) -> None:
    items = client.get("/v1/tasks", headers=ALPHA).get_json()["items"]
    names = [task["name"] for task in items]
    assert {"demo.echo", "demo.noop", "demo.sleep", "demo.progress", "demo.fail"} <= set(names)
    assert names == sorted(names)
    echo = next(task for task in items if task["name"] == "demo.echo")
    assert {"queue", "max_attempts", "backoff", "timeout_s"} <= set(echo)


# ---- schedules


def test_schedules_crud(client: FlaskClient) -> None:
    created = client.post(
        "/v1/schedules",
        json={"name": "nightly", "task": "demo.echo", "input": {"x": 1}, "cron": "0 3 * * *"},
        headers=ALPHA,
    )
    assert created.status_code == 201
    body = created.get_json()
    assert (body["name"], body["task"], body["input"], body["cron"], body["every_s"]) == (
        "nightly", "demo.echo", {"x": 1}, "0 3 * * *", None
    )  # fmt: skip
    fire = datetime.fromisoformat(body["next_fire_at"])
    assert (fire.hour, fire.minute) == (3, 0)
    assert timedelta(0) < fire - datetime.now(UTC) <= timedelta(days=1)

    replaced = client.post(
        "/v1/schedules",
        json={"name": "nightly", "task": "demo.noop", "every_s": 30, "queue": "cron"},
        headers=ALPHA,
    )
    assert replaced.status_code == 200
    assert (replaced.get_json()["cron"], replaced.get_json()["every_s"]) == (None, 30)
    fire = datetime.fromisoformat(replaced.get_json()["next_fire_at"])
    assert timedelta(seconds=25) < fire - datetime.now(UTC) <= timedelta(seconds=30)

    client.post("/v1/schedules", json={"name": "a", "task": "demo.echo", "every_s": 5},
                headers=ALPHA)  # fmt: skip
    listed = client.get("/v1/schedules", headers=ALPHA).get_json()["items"]
    assert [s["name"] for s in listed] == ["a", "nightly"]
    assert listed[1]["queue"] == "cron"
    assert client.get("/v1/schedules", headers=BETA).get_json()["items"] == []

    assert client.delete("/v1/schedules/nightly", headers=BETA).status_code == 404
    assert client.delete("/v1/schedules/nightly", headers=ALPHA).status_code == 204
    assert client.delete("/v1/schedules/nightly", headers=ALPHA).status_code == 404
    assert [s["name"] for s in client.get("/v1/schedules", headers=ALPHA).get_json()["items"]] == [
        "a"
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "s", "task": "demo.echo"}, "body"),
        ({"name": "s", "task": "demo.echo", "cron": "* * * * *", "every_s": 5}, "body"),
        ({"name": "s", "task": "no.such", "every_s": 5}, "task"),
        ({"name": "s", "task": "demo.echo", "cron": "every day"}, "cron"),
        ({"name": "s", "task": "demo.echo", "every_s": -1}, "every_s"),
        ({"name": "s s", "task": "demo.echo", "every_s": 1}, "name"),
        ({"name": "s", "task": "demo.echo", "every_s": 1, "extra": True}, "extra"),
    ],
)
def test_schedule_rules_are_422(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/schedules", json=body, headers=ALPHA)
    assert response.status_code == 422
    assert field in {error["field"] for error in response.get_json(force=True)["errors"]}


def test_schedule_body_not_json_is_400(client: FlaskClient) -> None:
    assert client.post("/v1/schedules", data="nope", headers=ALPHA).status_code == 400
