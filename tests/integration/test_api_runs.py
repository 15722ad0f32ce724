"""The runs API on real Postgres and Redis: submit rules, reads, lists, cancel, retry, events."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from rq import Queue

from app import attempts, dispatch, runs, tasks
from app.services import Services
from tests.conftest import auth
from tests.integration.api import ALPHA, BETA, submit


def registry_with_defaults() -> tasks.Registry:
    """The demo tasks plus one whose defaults the API must apply."""
    registry = tasks.Registry(dict(tasks.load([]).tasks))
    registry.task(
        "test.defaults",
        queue="special",
        max_attempts=3,
        backoff={"type": "fixed", "delay_ms": 10, "jitter": 0},
        timeout_s=9,
    )(lambda ctx, value: value)
    return registry


@pytest.fixture
def services(services: Services) -> Services:
    """The shared fixture's services, with a task whose defaults the API must apply."""
    services.registry = registry_with_defaults()
    return services


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return body  # type: ignore[no-any-return]


def rq_job_ids(services: Services, queue: str = "default", priority: int = 5) -> list[str]:
    name = services.keys.rq_queue(queue, priority)
    return Queue(name, connection=services.redis).job_ids


# ---- authentication


def test_missing_or_wrong_token_is_401_with_a_challenge(client: FlaskClient) -> None:
    for headers in ({}, auth("nope"), {"Authorization": "Basic dG9rLWFscGhh"}, auth("")):
        response = client.get("/v1/runs", headers=headers)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_token_scheme_is_case_insensitive(client: FlaskClient) -> None:
    assert client.get("/v1/runs", headers={"Authorization": "bearer tok-alpha"}).status_code == 200


# ---- submit: rejections


def test_body_that_is_not_json_is_400(client: FlaskClient) -> None:
    for raw in (b"{", b"", b"task=demo.echo", b'{"task": NaN}', b"\xff\xfe\x00"):
        response = client.post("/v1/runs", data=raw, headers=ALPHA, content_type="application/json")
        assert_problem(response, 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": 5}, "task"),
        ({"task": "demo.echo", "priority": "high"}, "priority"),
        ({"task": "demo.echo", "priority": 11}, "priority"),
        ({"task": "demo.echo", "max_attempts": 0}, "max_attempts"),
        ({"task": "demo.echo", "delay_ms": -5}, "delay_ms"),
        ({"task": "demo.echo", "timeout_s": 0}, "timeout_s"),
        (
            {"task": "demo.echo", "backoff": {"type": "fixed", "delay_ms": 1, "jitter": 2}},
            "backoff.jitter",
        ),
        ({"task": "demo.echo", "metadata": {"k": "v" * 20_000}}, "metadata"),
        ({"task": "demo.echo", "run_at": "next tuesday"}, "run_at"),
        ({"task": "demo.echo", "delay_ms": 1, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"task": "no.such.task"}, "task"),
        ({"task": "demo.echo", "colour": "red"}, "colour"),
        ({}, "task"),
        ([1, 2], "body"),
    ],
)
def test_rule_breaking_json_is_422_naming_the_field(
    client: FlaskClient, body: Any, field: str
) -> None:
    problem = assert_problem(client.post("/v1/runs", json=body, headers=ALPHA), 422)
    assert field in {error["field"] for error in problem["errors"]}
    assert field in problem["detail"]


def test_json_nested_absurdly_deep_is_refused_not_500(client: FlaskClient) -> None:
    for depth in (300, 5000):
        raw = '{"task": "demo.echo", "input": ' + "[" * depth + "]" * depth + "}"
        response = client.post("/v1/runs", data=raw, headers=ALPHA)
        assert response.status_code in (400, 422)


def test_body_over_1_mib_is_413(client: FlaskClient) -> None:
    body = json.dumps({"task": "demo.echo", "input": "x" * (2 * 1024 * 1024)})
    assert_problem(client.post("/v1/runs", data=body, headers=ALPHA), 413)


def test_chunked_body_over_1_mib_is_413(client: FlaskClient) -> None:
    body = json.dumps({"task": "demo.echo", "input": "x" * (2 * 1024 * 1024)}).encode()
    response = client.post(
        "/v1/runs",
        input_stream=io.BytesIO(body),
        headers={**ALPHA, "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_problem(response, 413)


def test_body_just_under_1_mib_is_accepted(client: FlaskClient) -> None:
    filler = "x" * (1024 * 1024 - 100)
    run = submit(client, input=filler)
    assert len(run["input"]) == len(filler)


# ---- submit: what it creates


def test_submit_returns_the_run_with_location_and_dispatches_it(
    client: FlaskClient, services: Services
) -> None:
    response = client.post(
        "/v1/runs", json={"task": "demo.echo", "input": {"a": [1]}, "priority": 2}, headers=ALPHA
    )
    run = response.get_json()
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v1/runs/{run['id']}"
    assert set(run) == {
        "id", "task", "queue", "status", "input", "result", "error", "attempt", "max_attempts",
        "priority", "progress", "metadata", "idempotency_key", "created_at", "scheduled_for",
        "started_at", "finished_at", "last_seq", "limit_key", "dedupe_key", "parent_id",
        "children", "waiting", "eta", "timings",
    }  # fmt: skip
    assert (run["status"], run["queue"], run["priority"], run["input"]) == (
        "queued", "default", 2, {"a": [1]}
    )  # fmt: skip
    assert (run["attempt"], run["max_attempts"], run["last_seq"], run["metadata"]) == (0, 1, 1, {})
    assert run["created_at"].endswith("Z")
    assert rq_job_ids(services, "default", 2) == [run["id"]]


def test_each_write_nudges_the_relay_once(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    nudges: list[object] = []
    nudge = dispatch.nudge_relay
    monkeypatch.setattr(
        dispatch, "nudge_relay", lambda target, keys: (nudges.append(target), nudge(target, keys))
    )
    run = submit(client)
    assert len(nudges) == 1, "a submit's dispatch pipeline carries its nudge; the web adds none"
    keyed = {**ALPHA, "Idempotency-Key": "once"}
    submit(client, keyed)
    submit(client, keyed)  # the replay committed nothing
    assert len(nudges) == 2
    assert client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA).status_code == 200
    assert len(nudges) == 3
    client.get(f"/v1/runs/{run['id']}", headers=ALPHA)
    assert len(nudges) == 3, "a read nudges nothing"


def test_task_defaults_apply_unless_given(client: FlaskClient, services: Services) -> None:
    run = submit(client, task="test.defaults")
    assert (run["queue"], run["max_attempts"]) == ("special", 3)
    with services.pool.connection() as conn:
        stored = runs.get_run(conn, "alpha", run["id"])
    assert stored.backoff == {"type": "fixed", "delay_ms": 10, "jitter": 0}
    assert stored.timeout_s == 9

    run = submit(client, task="test.defaults", queue="q2", max_attempts=1, timeout_s=1.5,
                 backoff={"type": "exponential", "delay_ms": 5})  # fmt: skip
    with services.pool.connection() as conn:
        stored = runs.get_run(conn, "alpha", run["id"])
    assert (stored.queue, stored.max_attempts, stored.timeout_s) == ("q2", 1, 1.5)
    assert stored.backoff == {"type": "exponential", "delay_ms": 5, "jitter": 0.0}


def test_delayed_runs_are_not_dispatched(client: FlaskClient, services: Services) -> None:
    run = submit(client, delay_ms=60_000)
    assert run["status"] == "delayed"
    due = datetime.fromisoformat(run["scheduled_for"])
    assert timedelta(seconds=55) < due - datetime.now(UTC) <= timedelta(seconds=60)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert submit(client, run_at=later)["status"] == "delayed"
    assert rq_job_ids(services) == []


def test_run_at_in_the_past_or_zero_delay_is_queued_now(client: FlaskClient) -> None:
    assert submit(client, run_at="2001-01-01T00:00:00Z")["status"] == "queued"
    assert submit(client, delay_ms=0)["status"] == "queued"


# ---- reads


def test_get_run_and_other_tenants_see_404(client: FlaskClient) -> None:
    run = submit(client)
    assert client.get(f"/v1/runs/{run['id']}", headers=ALPHA).get_json() == run
    assert_problem(client.get(f"/v1/runs/{run['id']}", headers=BETA), 404)
    assert_problem(client.post(f"/v1/runs/{run['id']}/cancel", headers=BETA), 404)
    assert_problem(client.get(f"/v1/runs/{run['id']}/events", headers=BETA), 404)


def test_invalid_run_ids_are_404(client: FlaskClient) -> None:
    for run_id in ("nope", "1234", "00000000-0000-0000-0000-000000000000"):
        assert_problem(client.get(f"/v1/runs/{run_id}", headers=ALPHA), 404)
        assert_problem(client.post(f"/v1/runs/{run_id}/retry", headers=ALPHA), 404)


def test_list_pages_newest_first(client: FlaskClient) -> None:
    made = [submit(client, input=i)["id"] for i in range(5)]
    submit(client, headers=BETA)
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/runs", query_string=query, headers=ALPHA).get_json()
        seen += [run["id"] for run in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert pages == 3
    assert len(client.get("/v1/runs", headers=ALPHA).get_json()["items"]) == 5  # default limit 50


def test_list_filters(client: FlaskClient) -> None:
    a = submit(client, queue="qa")
    submit(client, task="demo.noop")
    delayed = submit(client, delay_ms=60_000)

    def ids(**query: str) -> list[str]:
        page = client.get("/v1/runs", query_string=query, headers=ALPHA).get_json()
        return [run["id"] for run in page["items"]]

    assert ids(queue="qa") == [a["id"]]
    assert ids(status="delayed") == [delayed["id"]]
    assert len(ids(task="demo.echo")) == 2
    assert ids(task="demo.echo", status="delayed", queue="default") == [delayed["id"]]
    assert len(ids(status="", queue="", task="", cursor="", limit="")) == 3  # empty = not given


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"status": "done"},
     {"cursor": "!!!"}, {"cursor": "bm9wZQ"}],
)  # fmt: skip
def test_bad_list_queries_are_400(client: FlaskClient, query: dict[str, str]) -> None:
    assert_problem(client.get("/v1/runs", query_string=query, headers=ALPHA), 400)


# ---- cancel and retry


def test_cancel_a_queued_run_then_409(client: FlaskClient) -> None:
    run = submit(client)
    cancelled = client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA)
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert_problem(client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA), 409)


def test_cancel_a_running_run_flags_it_for_the_worker(
    client: FlaskClient, services: Services
) -> None:
    run = submit(client)
    with services.pool.connection() as conn:
        assert attempts.group_commit(
            conn, [attempts.claim_change(run["id"], worker="w1", lease_s=30)]
        )[0]
    response = client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA)
    assert response.status_code == 200
    assert response.get_json()["status"] == "running"
    flag = services.keys.cancel(run["id"], response.get_json()["attempt"])
    assert services.redis.exists(flag) and 0 < services.redis.ttl(flag) <= 86400


def test_retry_only_failed_or_cancelled(client: FlaskClient, services: Services) -> None:
    run = submit(client, max_attempts=1)
    assert_problem(client.post(f"/v1/runs/{run['id']}/retry", headers=ALPHA), 409)
    with services.pool.connection() as conn:
        claimed = attempts.group_commit(
            conn, [attempts.claim_change(run["id"], worker="w1", lease_s=30)]
        )[0]
        assert claimed is not None
        assert_problem(client.post(f"/v1/runs/{run['id']}/retry", headers=ALPHA), 409)
        attempts.group_commit(
            conn, [attempts.fail_change(claimed, {"type": "Boom", "message": "boom"})]
        )
    services.redis.delete(f"rq:queue:{services.keys.rq_queue('default', 5)}")

    retried = client.post(f"/v1/runs/{run['id']}/retry", headers=ALPHA)
    assert retried.status_code == 200
    body = retried.get_json()
    assert (body["status"], body["attempt"], body["error"]) == ("queued", 1, None)
    assert rq_job_ids(services) == [run["id"]]

    client.post(f"/v1/runs/{run['id']}/cancel", headers=ALPHA)
    assert client.post(f"/v1/runs/{run['id']}/retry", headers=ALPHA).status_code == 200


# ---- events


def test_events_history(client: FlaskClient, services: Services) -> None:
    run = submit(client)
    with services.pool.connection() as conn:
        claimed = attempts.group_commit(
            conn, [attempts.claim_change(run["id"], worker="w1", lease_s=30)]
        )[0]
        assert claimed is not None
        attempts.record_progress(conn, claimed, 50, "half")
        attempts.group_commit(conn, [attempts.finish_change(claimed, {"ok": True})])

    def events(**query: Any) -> list[dict[str, Any]]:
        response = client.get(f"/v1/runs/{run['id']}/events", query_string=query, headers=ALPHA)
        assert response.status_code == 200
        return response.get_json()["items"]  # type: ignore[no-any-return]

    all_events = events()
    assert [e["seq"] for e in all_events] == [1, 2, 3, 4]
    assert [e["type"] for e in all_events] == [
        "run.queued", "run.started", "run.progress", "run.succeeded"
    ]  # fmt: skip
    assert all_events[2]["data"] == {"percent": 50, "message": "half"}
    assert set(all_events[0]) == {"run_id", "seq", "type", "at", "data"}
    assert [e["seq"] for e in events(after=1, limit=2)] == [2, 3]
    assert events(after=4) == []
    for bad in ({"after": "x"}, {"after": "-1"}, {"limit": "0"}):
        response = client.get(f"/v1/runs/{run['id']}/events", query_string=bad, headers=ALPHA)
        assert_problem(response, 400)


def test_event_stream_requests_go_to_the_tails_module(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Response

    from app.web import tails

    calls: list[tuple[str, int]] = []

    def fake_sse(run: Any, after: int) -> Response:
        calls.append((run.id, after))
        return Response("ok", mimetype="text/event-stream")

    monkeypatch.setattr(tails, "sse_response", fake_sse, raising=False)
    run = submit(client)
    url = f"/v1/runs/{run['id']}/events"
    sse = {**ALPHA, "Accept": "text/event-stream"}
    assert client.get(url, headers=sse).status_code == 200
    client.get(url, query_string={"after": 3}, headers={**sse, "Last-Event-ID": "7"})
    client.get(url, query_string={"after": 9}, headers={**sse, "Last-Event-ID": "7"})
    assert calls == [(run["id"], 0), (run["id"], 7), (run["id"], 9)]

    assert_problem(client.get(url, headers={**sse, "Last-Event-ID": "abc"}), 400)
    assert client.get(url, headers={**ALPHA, "Accept": "*/*"}).is_json  # not a stream
    assert_problem(client.get(url.replace(run["id"], "nope"), headers=sse), 404)
