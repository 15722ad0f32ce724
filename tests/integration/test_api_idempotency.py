"""Idempotency-Key on POST /v1/runs against real Redis and Postgres (CONTRACT §2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from app.config import Settings
from app.services import Services
from app.web import create_app
from app.web.idempotency import IdempotencyStore, fingerprint
from runlane.embedded import free_port
from tests.conftest import auth

ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")
BODY = {"task": "demo.echo", "input": {"n": 1, "list": [1, 2]}}


def post(client: FlaskClient, key: str, body: Any = BODY, headers: dict[str, str] = ALPHA) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/v1/runs", data=data, headers={**headers, "Idempotency-Key": key})


def run_count(services: Services, tenant: str = "alpha") -> int:
    with services.pool.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM runs WHERE tenant = %s", (tenant,)).fetchone()
    assert row is not None
    return int(row["n"])


def forget_keys(services: Services) -> None:
    """What a Redis restart does to this test's keys (never FLUSHALL the shared Redis)."""
    keys = list(services.redis.scan_iter(match=f"{services.keys.prefix}*"))
    assert keys
    services.redis.delete(*keys)


def test_same_key_and_body_replays_the_first_response(
    client: FlaskClient, services: Services
) -> None:
    first = post(client, "k1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    again = post(client, "k1", {"input": {"list": [1, 2], "n": 1}, "task": "demo.echo"})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.data == first.data
    assert again.headers["Location"] == first.headers["Location"]
    assert first.get_json()["idempotency_key"] == "k1"
    assert run_count(services) == 1


def test_the_same_key_in_flight_is_409_with_retry_after(
    client: FlaskClient, services: Services
) -> None:
    store = IdempotencyStore(services.redis, services.keys, 60)
    store.claim("alpha", "busy", fingerprint("POST", "/v1/runs", BODY))
    response = post(client, "busy")
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert run_count(services) == 0


def test_reusing_a_key_with_another_body_is_422(client: FlaskClient, services: Services) -> None:
    assert post(client, "k2").status_code == 201
    other = post(client, "k2", {**BODY, "priority": 1})
    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert run_count(services) == 1


def test_keys_belong_to_one_tenant(client: FlaskClient, services: Services) -> None:
    a = post(client, "shared").get_json()
    b = post(client, "shared", {"task": "demo.noop"}, headers=BETA)
    assert b.status_code == 201 and "Idempotent-Replayed" not in b.headers
    assert b.get_json()["id"] != a["id"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ("{not json", ALPHA, 400),
        ({"task": "demo.echo", "priority": 0}, ALPHA, 422),
        ({"task": "no.such.task"}, ALPHA, 422),
        ({**BODY, "input": "x" * (2 * 1024 * 1024)}, ALPHA, 413),
        (BODY, auth("wrong"), 401),
    ],
)
def test_rejected_requests_do_not_consume_the_key(
    client: FlaskClient, services: Services, body: Any, headers: dict[str, str], status: int
) -> None:
    assert post(client, "k3", body, headers).status_code == status
    created = post(client, "k3")
    assert created.status_code == 201
    assert "Idempotent-Replayed" not in created.headers


def test_bad_keys_are_400(client: FlaskClient) -> None:
    for key in ("", "k" * 256, "caf\u00e9", "a\tb"):
        response = client.post(
            "/v1/runs",
            json=BODY,
            headers={**ALPHA, "Idempotency-Key": key.encode().decode("latin-1")},
        )
        assert response.status_code == 400, key
        assert response.mimetype == "application/problem+json"
    assert post(client, "k" * 255).status_code == 201


def test_after_redis_forgets_the_key_postgres_gives_the_same_run(
    client: FlaskClient, services: Services
) -> None:
    first = post(client, "k4").get_json()
    forget_keys(services)

    again = post(client, "k4")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first["id"]
    assert run_count(services) == 1
    # and the replay is kept in Redis again
    assert post(client, "k4").get_json()["id"] == first["id"]

    forget_keys(services)
    assert post(client, "k4", {**BODY, "priority": 9}).status_code == 422
    assert post(client, "k4").status_code == 201  # the refusal released the key
    assert run_count(services) == 1


def test_with_redis_down_postgres_alone_keeps_keys_idempotent(
    settings: Settings, services: Services
) -> None:
    down = Services(
        settings=settings,
        pool=services.pool,
        redis=Redis(port=free_port(), socket_connect_timeout=0.2, retry=None),
        keys=services.keys,
        registry=services.registry,
    )
    client = create_app(services=down).test_client()
    first = post(client, "k5")
    assert first.status_code == 201
    again = post(client, "k5")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert post(client, "k5", {**BODY, "priority": 2}).status_code == 422
    assert run_count(services) == 1
    # the run was committed, so it is dispatched later by the scheduler's sweep
    assert first.get_json()["status"] == "queued"
