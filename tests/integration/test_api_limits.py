"""PUT /v1/queues/{name}/limits and what it shows (contract §5.1), on real Postgres and Redis:
limits merge, null removes one, bad bodies name their field, held runs say why they wait."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from app import attempts
from app.services import Services
from tests.conftest import auth

ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")
NONE = {"concurrency": None, "rate": None, "key_concurrency": None, "key_rate": None}


def put(client: FlaskClient, queue: str, body: Any, headers: dict[str, str] = ALPHA) -> Any:
    return client.put(f"/v1/queues/{queue}/limits", json=body, headers=headers)


def limits_of(client: FlaskClient, queue: str, headers: dict[str, str] = ALPHA) -> Any:
    items = client.get("/v1/queues", headers=headers).get_json()["items"]
    return {item["name"]: item["limits"] for item in items}.get(queue)


def submit(client: FlaskClient, **body: Any) -> Any:
    response = client.post("/v1/runs", json={"task": "demo.echo", **body}, headers=ALPHA)
    assert response.status_code == 201
    return response.get_json()


def test_limits_are_set_merged_and_removed_by_null(client: FlaskClient) -> None:
    response = put(client, "reports", {"concurrency": 2})
    assert response.status_code == 200
    assert response.get_json()["name"] == "reports"
    assert response.get_json()["limits"] == {**NONE, "concurrency": 2}
    rate = {"limit": 10, "period_s": 1.5}
    shown = put(client, "reports", {"rate": rate, "key_concurrency": 1}).get_json()["limits"]
    assert shown == {**NONE, "concurrency": 2, "rate": rate, "key_concurrency": 1}
    assert limits_of(client, "reports") == shown  # a queue with limits and no runs is listed
    assert limits_of(client, "reports", BETA) is None  # the caller's own
    shown = put(client, "reports", {"concurrency": None, "rate": None}).get_json()["limits"]
    assert shown == {**NONE, "key_concurrency": 1}
    assert put(client, "reports", {"key_concurrency": None}).get_json()["limits"] == NONE
    assert limits_of(client, "reports") is None


def test_bad_limits_are_422_naming_the_field(client: FlaskClient) -> None:
    for body, field in [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"rate": {"limit": 5}}, "rate.period_s"),
        ({"rate": {"limit": 5, "period_s": 0}}, "rate.period_s"),
        ({"key_rate": {"limit": 0, "period_s": 1}}, "key_rate.limit"),
        ({"burst": 3}, "burst"),
    ]:
        response = put(client, "reports", body)
        assert response.status_code == 422, body
        assert response.content_type == "application/problem+json"
        assert field in response.get_data(as_text=True), (body, response.get_json())
    assert put(client, "bad name!", {"concurrency": 1}).status_code == 404
    assert limits_of(client, "reports") is None  # nothing was stored


def test_a_held_run_says_which_limit_holds_it_and_raising_it_releases_the_run(
    client: FlaskClient, services: Services
) -> None:
    put(client, "reports", {"concurrency": 1})
    first, second = submit(client, queue="reports"), submit(client, queue="reports")
    with services.pool.connection() as conn:
        changes = [attempts.claim_change(r["id"], worker="w", lease_s=30) for r in (first, second)]
        assert attempts.commit(conn, changes).done[1] is None
    waiting = client.get(f"/v1/runs/{second['id']}", headers=ALPHA).get_json()["waiting"]
    assert waiting["reason"] == "concurrency_limited" and waiting["until"] is None
    queued_before = services.redis.llen(f"rq:queue:{services.keys.rq_queue('reports', 5)}")
    put(client, "reports", {"concurrency": 2})
    queued_after = services.redis.llen(f"rq:queue:{services.keys.rq_queue('reports', 5)}")
    assert queued_after == queued_before + 1  # released and handed to RQ again
    waiting = client.get(f"/v1/runs/{second['id']}", headers=ALPHA).get_json()["waiting"]
    assert waiting["reason"] != "concurrency_limited"


def test_a_rate_held_run_says_until_when(client: FlaskClient, services: Services) -> None:
    put(client, "mail", {"rate": {"limit": 1, "period_s": 60}})
    first, second = submit(client, queue="mail"), submit(client, queue="mail")
    with services.pool.connection() as conn:
        changes = [attempts.claim_change(r["id"], worker="w", lease_s=30) for r in (first, second)]
        attempts.commit(conn, changes)
    waiting = client.get(f"/v1/runs/{second['id']}", headers=ALPHA).get_json()["waiting"]
    assert waiting["reason"] == "rate_limited" and waiting["until"] is not None


@pytest.mark.parametrize(
    ("limits", "reason", "until"),
    [
        ({"key_concurrency": 1}, "key_concurrency_limited", False),
        ({"key_rate": {"limit": 1, "period_s": 60}}, "key_rate_limited", True),
    ],
)
def test_a_run_held_by_its_keys_limit_says_so_while_another_key_starts(
    client: FlaskClient, services: Services, limits: Any, reason: str, until: bool
) -> None:
    put(client, "crm", limits)
    first = submit(client, queue="crm", limit_key="acme")
    second = submit(client, queue="crm", limit_key="acme")
    other = submit(client, queue="crm", limit_key="globex")
    with services.pool.connection() as conn:
        changes = [attempts.claim_change(r["id"], worker="w", lease_s=30) for r in (first, second)]
        changes.append(attempts.claim_change(other["id"], worker="w", lease_s=30))
        done = attempts.commit(conn, changes).done
    assert [run is not None for run in done] == [True, False, True]
    waiting = client.get(f"/v1/runs/{second['id']}", headers=ALPHA).get_json()["waiting"]
    assert waiting["reason"] == reason and (waiting["until"] is not None) is until


def test_metrics_count_held_runs_per_queue_and_reason(
    client: FlaskClient, services: Services
) -> None:
    put(client, "reports", {"concurrency": 1})
    made = [submit(client, queue="reports") for _ in range(3)]
    with services.pool.connection() as conn:
        attempts.commit(
            conn, [attempts.claim_change(r["id"], worker="w", lease_s=30) for r in made]
        )
    text = client.get("/metrics").get_data(as_text=True)
    assert 'runlane_runs_held{queue="reports",reason="concurrency_limited"} 2.0' in text
