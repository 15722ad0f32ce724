"""Flows and batches through the API (CONTRACT §5.4, §5.5) against real Postgres and Redis: what
is made, what is refused (whole), replays, dedupe per item and tenant isolation. Running them
with real workers is tests/e2e/test_flows.py's."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from app.services import Services
from tests.conftest import auth

ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")


def post(
    client: FlaskClient, path: str, body: Any, headers: dict[str, str] = ALPHA, key: str = ""
) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(path, data=json.dumps(body), headers={**headers, **extra})


def count(services: Services, where: str = "true") -> int:
    with services.pool.connection() as conn:
        row = conn.execute(f"SELECT count(*) AS n FROM runs WHERE {where}").fetchone()
    assert row is not None
    return int(row["n"])


def event_types(client: FlaskClient, run_id: str, headers: dict[str, str] = ALPHA) -> list[str]:
    items = client.get(f"/v1/runs/{run_id}/events", headers=headers).get_json()["items"]
    return [e["type"] for e in items]


def test_a_batch_of_a_thousand_is_made_in_order_and_queued(
    client: FlaskClient, services: Services
) -> None:
    runs = [{"task": "demo.echo", "input": {"n": i}, "priority": 1 + i % 10} for i in range(1000)]
    response = post(client, "/v1/runs/batch", {"runs": runs})
    assert response.status_code == 201, response.get_json()
    items = response.get_json()["items"]
    assert [item["input"] for item in items] == [{"n": i} for i in range(1000)]
    assert {item["status"] for item in items} == {"queued"}
    assert count(services, "tenant = 'alpha'") == 1000
    jobs = services.redis.pipeline(transaction=False)
    for item in items:
        jobs.exists(f"rq:job:{item['id']}")
    assert all(jobs.execute()), "each run was handed to RQ"
    assert event_types(client, items[517]["id"]) == ["run.queued"]
    created = [item["created_at"] for item in items]
    assert created == sorted(created), "created_at follows the order given"


def test_a_broken_item_refuses_the_whole_batch_naming_it(
    client: FlaskClient, services: Services
) -> None:
    runs = [{"task": "demo.echo"} for _ in range(1000)]
    runs[517] = {"task": "demo.echo", "priority": 11}
    response = post(client, "/v1/runs/batch", {"runs": runs}, key="broken-batch")
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == ["runs[517].priority"]
    runs[3] = {"task": "no.such.task"}
    fields = [
        e["field"] for e in post(client, "/v1/runs/batch", {"runs": runs}).get_json()["errors"]
    ]
    assert fields == ["runs[3].task", "runs[517].priority"]
    assert count(services) == 0
    runs[3] = runs[517] = {"task": "demo.echo"}
    again = post(client, "/v1/runs/batch", {"runs": runs}, key="broken-batch")
    assert again.status_code == 201, "a refused request did not consume the key"


def test_a_batch_must_hold_one_to_a_thousand_runs(client: FlaskClient) -> None:
    for runs in ([], [{"task": "demo.echo"}] * 1001):
        response = post(client, "/v1/runs/batch", {"runs": runs})
        assert response.status_code == 422
        assert [e["field"] for e in response.get_json()["errors"]] == ["runs"]
    assert post(client, "/v1/runs/batch", {"items": []}).status_code == 422
    assert client.post("/v1/runs/batch", data="[", headers=ALPHA).status_code == 400


def test_an_idempotency_key_replays_the_whole_batch_even_once_redis_forgot_it(
    client: FlaskClient, services: Services
) -> None:
    body = {"runs": [{"task": "demo.echo", "input": i} for i in range(5)]}
    first = post(client, "/v1/runs/batch", body, key="batch-1")
    assert first.status_code == 201
    replay = post(client, "/v1/runs/batch", body, key="batch-1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_data() == first.get_data()
    other = post(client, "/v1/runs/batch", {"runs": body["runs"][:4]}, key="batch-1")
    assert other.status_code == 422
    keys = list(services.redis.scan_iter(match=f"{services.keys.prefix}*idem*"))
    assert keys, "the key was stored in Redis"
    services.redis.delete(*keys)
    after = post(client, "/v1/runs/batch", body, key="batch-1")
    assert after.status_code == 201 and after.headers["Idempotent-Replayed"] == "true"
    first_ids = [item["id"] for item in first.get_json()["items"]]
    assert [item["id"] for item in after.get_json()["items"]] == first_ids
    assert (
        post(client, "/v1/runs/batch", {"runs": body["runs"][:4]}, key="batch-1").status_code == 422
    )
    assert count(services) == 5


def test_batch_items_may_carry_dedupe_keys(client: FlaskClient, services: Services) -> None:
    held = post(client, "/v1/runs", {"task": "demo.echo", "queue": "q", "dedupe": {"key": "k"}})
    assert held.status_code == 201
    runs = [
        {"task": "demo.echo", "queue": "q", "dedupe": {"key": "k"}},
        {"task": "demo.echo", "queue": "q", "dedupe": {"key": "fresh"}, "input": 1},
        {"task": "demo.echo", "queue": "q", "dedupe": {"key": "fresh"}, "input": 2},
        {"task": "demo.echo", "queue": "q"},
    ]
    items = post(client, "/v1/runs/batch", {"runs": runs}).get_json()["items"]
    assert items[0]["id"] == held.get_json()["id"]
    assert items[1]["id"] == items[2]["id"] and items[1]["input"] == 1
    assert len({item["id"] for item in items}) == 3
    assert count(services) == 3


def test_a_flow_is_made_whole_with_its_first_events(
    client: FlaskClient, services: Services
) -> None:
    body = {
        "task": "demo.collect",
        "on_child_failure": "ignore",
        "children": [
            {"task": "demo.echo", "input": 1},
            {"task": "demo.collect", "children": [{"task": "demo.echo", "delay_ms": 60_000}]},
        ],
    }
    response = post(client, "/v1/runs", body)
    assert response.status_code == 201, response.get_json()
    parent = response.get_json()
    assert parent["status"] == "waiting" and parent["parent_id"] is None
    assert parent["waiting"]["reason"] == "children"
    assert response.headers["Location"] == f"/v1/runs/{parent['id']}"
    listed = client.get(f"/v1/runs?parent_id={parent['id']}", headers=ALPHA).get_json()["items"]
    echo, nested = sorted(listed, key=lambda run: run["task"], reverse=True)
    assert echo["status"] == "queued" and echo["parent_id"] == parent["id"]
    assert nested["status"] == "waiting" and nested["children"]["total"] == 1
    [grandchild] = client.get(f"/v1/runs?parent_id={nested['id']}", headers=ALPHA).get_json()[
        "items"
    ]
    assert grandchild["status"] == "delayed"
    assert event_types(client, parent["id"]) == ["run.waiting"]
    events = client.get(f"/v1/runs/{parent['id']}/events", headers=ALPHA).get_json()["items"]
    assert events[0]["data"] == {"children": 2}
    assert count(services) == 4
    shown = client.get(f"/v1/runs/{parent['id']}", headers=ALPHA).get_json()
    assert shown["children"] == {
        "total": 2,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "pending": 2,
    }


def test_a_flow_replays_by_its_idempotency_key(client: FlaskClient, services: Services) -> None:
    body = {"task": "demo.collect", "children": [{"task": "demo.echo"}] * 3}
    first = post(client, "/v1/runs", body, key="flow-1")
    keys = list(services.redis.scan_iter(match=f"{services.keys.prefix}*idem*"))
    services.redis.delete(*keys)
    again = post(client, "/v1/runs", body, key="flow-1")
    assert again.status_code == 201 and again.get_json()["id"] == first.get_json()["id"]
    assert count(services) == 4, "no second flow, not even its children"


def test_flows_are_refused_whole_when_too_deep_or_broken(
    client: FlaskClient, services: Services
) -> None:
    node: dict[str, Any] = {"task": "demo.echo"}
    for _ in range(6):
        node = {"task": "demo.collect", "children": [node]}
    response = post(client, "/v1/runs", node)
    assert response.status_code == 422
    deepest = "children[0]." * 5 + "children"
    assert [e["field"] for e in response.get_json()["errors"]] == [deepest]
    assert post(client, "/v1/runs", node["children"][0]).status_code == 201  # depth 5 is fine
    broken = {"task": "demo.collect", "children": [{"task": "demo.echo"}, {"task": "x.y"}]}
    errors = post(client, "/v1/runs", broken).get_json()["errors"]
    assert [e["field"] for e in errors] == ["children[1].task"]
    lonely = post(client, "/v1/runs", {"task": "demo.echo", "on_child_failure": "ignore"})
    assert lonely.status_code == 201 and lonely.get_json()["children"] is None
    too_many = {"task": "demo.collect", "children": [{"task": "demo.echo"}] * 1001}
    assert [e["field"] for e in post(client, "/v1/runs", too_many).get_json()["errors"]] == [
        "children"
    ]
    assert count(services) == 7


def test_a_child_whose_dedupe_key_is_held_refuses_the_flow(
    client: FlaskClient, services: Services
) -> None:
    post(client, "/v1/runs", {"task": "demo.echo", "queue": "q", "dedupe": {"key": "k"}})
    body = {"task": "demo.collect", "children": [{"task": "demo.echo", "dedupe": {"key": "k"}}]}
    response = post(client, "/v1/runs", body)
    assert response.status_code == 409
    assert [e["field"] for e in response.get_json()["errors"]] == ["children[0].dedupe.key"]
    assert count(services) == 1


def test_another_tenants_flows_cannot_be_seen_or_extended(
    client: FlaskClient, services: Services
) -> None:
    parent = post(client, "/v1/runs", {"task": "demo.collect", "children": [{"task": "demo.echo"}]})
    parent_id = parent.get_json()["id"]
    assert client.get(f"/v1/runs/{parent_id}", headers=BETA).status_code == 404
    assert client.get(f"/v1/runs?parent_id={parent_id}", headers=BETA).get_json()["items"] == []
    assert client.post(f"/v1/runs/{parent_id}/cancel", headers=BETA).status_code == 404
    # a child names its parent only by being inside it: there is no field to graft one on
    graft = post(client, "/v1/runs", {"task": "demo.echo", "parent_id": parent_id}, headers=BETA)
    assert graft.status_code == 422
    batch = post(client, "/v1/runs/batch", {"runs": [{"task": "demo.echo"}]}, headers=BETA)
    beta_id = batch.get_json()["items"][0]["id"]
    assert client.get(f"/v1/runs/{beta_id}", headers=ALPHA).status_code == 404
    assert count(services, "tenant = 'beta'") == 1 and count(services, "tenant = 'alpha'") == 2


def test_cancelling_a_waiting_parent_cancels_its_children_at_once(client: FlaskClient) -> None:
    body = {"task": "demo.collect", "children": [{"task": "demo.echo", "queue": "q"}] * 3}
    parent = post(client, "/v1/runs", body).get_json()
    response = client.post(f"/v1/runs/{parent['id']}/cancel", headers=ALPHA)
    assert response.status_code == 200
    cancelled = response.get_json()
    assert cancelled["status"] == "cancelled" and cancelled["children"]["cancelled"] == 3
    listed = client.get(f"/v1/runs?parent_id={parent['id']}", headers=ALPHA).get_json()["items"]
    assert {run["status"] for run in listed} == {"cancelled"}
    assert event_types(client, listed[0]["id"]) == ["run.queued", "run.cancelled"]
    assert client.get("/v1/runs?parent_id=nope", headers=ALPHA).status_code == 400


def test_every_run_a_flow_or_a_batch_makes_is_counted_in_metrics(client: FlaskClient) -> None:
    flow = {"task": "demo.collect", "children": [{"task": "demo.echo", "queue": "mail"}] * 2}
    assert post(client, "/v1/runs", flow, key="f").status_code == 201
    assert post(client, "/v1/runs", flow, key="f").status_code == 201  # a replay makes none
    batch = {"runs": [{"task": "demo.echo"}, {"task": "demo.echo", "queue": "mail"}]}
    assert post(client, "/v1/runs/batch", batch).status_code == 201
    text = client.get("/metrics").get_data(as_text=True)
    assert 'runlane_runs_created_total{queue="default"} 2.0' in text
    assert 'runlane_runs_created_total{queue="mail"} 3.0' in text
    assert "runlane_idempotent_replays_total 1.0" in text
