"""Deduplication on POST /v1/runs against real Postgres and Redis (CONTRACT §5.3)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import runs, tasks
from app.services import Services
from tests.conftest import auth
from tests.helpers import wait_for

ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")


@pytest.fixture
def services(services: Services) -> Services:
    """The shared fixture's services, with a task that derives its dedupe key from its input."""
    registry = tasks.Registry(dict(tasks.load([]).tasks))
    registry.task(
        "test.per_customer",
        limit_key=lambda value: value["customer"],
        dedupe_key=lambda value: value["customer"],
    )(lambda ctx, value: value)
    services.registry = registry
    return services


def post(client: FlaskClient, headers: dict[str, str] = ALPHA, **body: Any) -> Any:
    return client.post("/v1/runs", json={"task": "demo.echo", **body}, headers=headers)


def run_ids(services: Services, tenant: str = "alpha") -> list[str]:
    with services.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id::text AS id FROM runs WHERE tenant = %s ORDER BY created_at", (tenant,)
        ).fetchall()
    return [row["id"] for row in rows]


def event_types(services: Services, run_id: str) -> list[str]:
    with services.pool.connection() as conn:
        return [event.type.value for event in runs.list_events(conn, run_id)]


def test_a_live_run_holds_its_key_until_it_ends(client: FlaskClient, services: Services) -> None:
    first = post(client, input=1, dedupe={"key": "order-7"})
    assert first.status_code == 201 and "Deduplicated" not in first.headers
    run = first.get_json()
    assert run["dedupe_key"] == "order-7"

    again = post(client, input=2, dedupe={"key": "order-7"})
    assert again.status_code == 200 and again.headers["Deduplicated"] == "true"
    assert again.get_json()["id"] == run["id"] and again.get_json()["input"] == 1
    assert post(client, BETA, dedupe={"key": "order-7"}).status_code == 201, "keys are per tenant"
    assert post(client, dedupe={"key": "order-8"}).status_code == 201

    assert client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA).status_code == 200
    after = post(client, input=3, dedupe={"key": "order-7"})
    assert after.status_code == 201 and after.get_json()["id"] != run["id"]
    assert len(run_ids(services)) == 3


def test_with_ttl_the_key_holds_for_ttl_s_whether_or_not_the_run_ended(
    client: FlaskClient,
) -> None:
    run = post(client, dedupe={"key": "mail", "ttl_s": 1.5}).get_json()
    assert client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA).status_code == 200
    held = post(client, dedupe={"key": "mail", "ttl_s": 1.5})
    assert (held.status_code, held.get_json()["id"]) == (200, run["id"])

    def fresh() -> bool:
        answer = post(client, dedupe={"key": "mail", "ttl_s": 1.5})
        return answer.status_code == 201 and answer.get_json()["id"] != run["id"]

    wait_for(fresh, 10, interval=0.1, message="the key to be free after ttl_s")


def test_debounce_runs_only_the_last_input_and_restarts_the_delay(
    client: FlaskClient, services: Services
) -> None:
    first = post(
        client, input={"v": 1}, metadata={"n": 1}, dedupe={"key": "d", "debounce_ms": 60_000}
    )
    run = first.get_json()
    assert (first.status_code, run["status"]) == (201, "delayed")
    later = []
    for value in (2, 3):
        answer = post(
            client,
            input={"v": value},
            metadata={"n": value},
            dedupe={"key": "d", "debounce_ms": 60_000},
        )
        assert answer.status_code == 200 and answer.headers["Deduplicated"] == "true"
        later.append(answer.get_json())
    assert [r["id"] for r in later] == [run["id"], run["id"]]
    assert (later[-1]["input"], later[-1]["metadata"]) == ({"v": 3}, {"n": 3})
    times = [datetime.fromisoformat(r["scheduled_for"]) for r in (run, *later)]
    assert times == sorted(times) and len(set(times)) == 3, "each submit restarts the delay"
    assert event_types(services, run["id"]) == ["run.delayed", "run.debounced", "run.debounced"]
    assert run_ids(services) == [run["id"]]


def test_a_debounced_run_that_started_no_longer_takes_input(
    client: FlaskClient, services: Services
) -> None:
    run = post(client, input=1, dedupe={"key": "d", "debounce_ms": 50}).get_json()
    with services.pool.connection() as conn:
        wait_for(lambda: runs.promote_due(conn), 10, interval=0.02, message="the run to be due")
    answer = post(client, input=2, dedupe={"key": "d", "debounce_ms": 50})
    assert answer.status_code == 201 and answer.get_json()["id"] != run["id"]
    assert answer.get_json()["status"] == "delayed"


def test_twenty_concurrent_submits_of_one_key_make_one_run(app: Flask, services: Services) -> None:
    barrier = threading.Barrier(20)
    answers: list[tuple[int, str]] = []

    def submit() -> None:
        client = app.test_client()
        barrier.wait(10)
        answer = post(client, dedupe={"key": "burst"})
        answers.append((answer.status_code, answer.get_json()["id"]))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(status for status, _ in answers) == [200] * 19 + [201]
    assert len({run_id for _, run_id in answers}) == 1
    assert run_ids(services) == [answers[0][1]]


def test_the_key_holds_after_redis_forgets_everything(
    client: FlaskClient, services: Services
) -> None:
    run = post(client, dedupe={"key": "k"}).get_json()
    keys = list(services.redis.scan_iter(match=f"{services.keys.prefix}*"))
    services.redis.delete(*keys)
    again = post(client, dedupe={"key": "k"})
    assert (again.status_code, again.get_json()["id"]) == (200, run["id"])


def test_an_idempotency_key_is_checked_first_and_replays_the_deduplicated_answer(
    client: FlaskClient,
) -> None:
    run = post(client, dedupe={"key": "k"}).get_json()
    keyed = {**ALPHA, "Idempotency-Key": "req-1"}
    first = post(client, keyed, dedupe={"key": "k"})
    replay = post(client, keyed, dedupe={"key": "k"})
    assert first.status_code == replay.status_code == 200
    assert first.data == replay.data and replay.get_json()["id"] == run["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Deduplicated"] == "true"


def test_a_task_derives_the_keys_from_the_input_unless_the_run_gives_them(
    client: FlaskClient,
) -> None:
    first = post(client, task="test.per_customer", input={"customer": "c1"}).get_json()
    assert (first["dedupe_key"], first["limit_key"]) == ("c1", "c1")
    plain = post(client, input=1, limit_key="acct-9").get_json()
    assert (plain["limit_key"], plain["dedupe_key"]) == ("acct-9", None)
    same = post(client, task="test.per_customer", input={"customer": "c1", "n": 2})
    assert (same.status_code, same.get_json()["id"]) == (200, first["id"])
    own = post(
        client,
        task="test.per_customer",
        input={"customer": "c1"},
        dedupe={"key": "x"},
        limit_key="y",
    )
    assert own.status_code == 201
    assert (own.get_json()["dedupe_key"], own.get_json()["limit_key"]) == ("x", "y")
    bad = post(client, task="test.per_customer", input={"no": "customer"})
    assert bad.status_code == 422
    assert [e["field"] for e in bad.get_json()["errors"]] == ["input"]


@pytest.mark.parametrize(
    "dedupe",
    [
        {"key": "k", "ttl_s": 5, "debounce_ms": 10},
        {"key": ""},
        {"key": "k" * 256},
        {"key": "k", "ttl_s": 0},
        {"key": "k", "debounce_ms": 1.5},
        {"ttl_s": 5},
        "k",
    ],
)
def test_bad_dedupe_fields_are_422_naming_the_field(client: FlaskClient, dedupe: Any) -> None:
    answer = post(client, dedupe=dedupe)
    assert answer.status_code == 422
    assert answer.mimetype == "application/problem+json"
    assert all(e["field"].startswith("dedupe") for e in answer.get_json()["errors"])


@pytest.mark.parametrize("limit_key", ["", "k" * 256, 7])
def test_a_bad_limit_key_is_422_naming_it(client: FlaskClient, limit_key: Any) -> None:
    answer = post(client, limit_key=limit_key)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == ["limit_key"]
