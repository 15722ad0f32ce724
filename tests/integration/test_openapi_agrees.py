"""/openapi.json and the server agree: every answer to a good or bad request is one of the statuses
its operation lists, and its body validates against the schema documented for it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from app import runs
from app.services import Services
from tests.conftest import auth
from tests.integration.documented import check_documented

ALPHA = auth("tok-alpha")
NOBODY = "00000000-0000-0000-0000-000000000000"
SSE = {"Accept": "text/event-stream"}
Case = tuple[str, str, dict[str, Any]]  # method, path (with query), keyword arguments


def cases(run_id: str, finished_id: str, webhook_id: str) -> list[Case]:
    """Requests of every documented operation: good ones, and ones that break what they can."""
    run, finished = f"/v1/runs/{run_id}", f"/v1/runs/{finished_id}"
    hook = f"/v1/webhooks/{webhook_id}"
    schedule = {"name": "nightly", "task": "demo.echo", "every_s": 60}
    return [
        ("post", "/v1/runs", {"json": {"task": "demo.echo"}}),
        ("post", "/v1/runs", {"data": b"{"}),
        ("post", "/v1/runs", {"json": {"task": "demo.echo", "priority": 99}}),
        ("post", "/v1/runs", {"data": b'{"task": "demo.echo", "input": "\\u0000"}'}),
        ("post", "/v1/runs", {"json": {"task": "demo.echo", "input": "x" * 2_000_000}}),
        ("post", "/v1/runs", {"json": {"task": "demo.echo"}, "headers": {"Idempotency-Key": ""}}),
        ("post", "/v1/runs/batch", {"json": {"runs": [{"task": "demo.echo"}]}}),
        ("post", "/v1/runs/batch", {"json": {"runs": [{"task": "demo.echo", "priority": 0}]}}),
        (
            "post",
            "/v1/runs",
            {"json": {"task": "demo.collect", "children": [{"task": "demo.echo"}]}},
        ),
        ("post", "/v1/runs/cancel", {"json": {"ids": [finished_id]}}),
        ("post", "/v1/runs/cancel", {"json": {"ids": [finished_id], "status": "failed"}}),
        ("post", "/v1/runs/cancel", {"data": b"{"}),
        ("post", "/v1/runs/retry", {"json": {"status": "failed"}}),
        ("post", "/v1/runs/retry", {"json": {"status": "nope"}}),
        ("get", "/v1/runs", {}),
        ("get", "/v1/runs?limit=0", {}),
        ("get", f"/v1/runs?parent_id={NOBODY}", {}),
        ("get", "/v1/runs?task=a%00b", {}),
        ("get", run, {}),
        ("get", f"/v1/runs/{NOBODY}", {}),
        ("post", f"{run}/retry", {}),
        ("post", f"{finished}/cancel", {}),
        ("post", f"/v1/runs/{NOBODY}/cancel", {}),
        ("post", f"{finished}/retry", {}),
        ("post", f"{finished}/cancel", {}),
        ("get", f"{run}/events", {}),
        ("get", f"{run}/events?after=x", {}),
        ("get", f"{run}/events?after=%00", {}),
        ("get", f"/v1/runs/{NOBODY}/events", {}),
        ("post", f"{finished}/cancel", {}),
        ("get", f"{finished}/events?token=tok-alpha", {"headers": {**SSE, "Last-Event-ID": "99"}}),
        ("get", f"{finished}/events", {"headers": {**SSE, "Last-Event-ID": "x"}}),
        ("get", f"{run}/tail", {}),
        ("get", f"{run}/tail?after=x", {}),
        ("get", f"/v1/runs/{NOBODY}/tail", {}),
        ("get", "/v1/tail", {}),
        ("get", "/v1/tail?cursor=-1", {}),
        ("get", "/v1/queues", {}),
        ("post", "/v1/queues/default/pause", {}),
        ("post", "/v1/queues/default/resume", {}),
        ("put", "/v1/queues/default/limits", {"json": {"concurrency": 3}}),
        ("put", "/v1/queues/default/limits", {"json": {"concurrency": 0}}),
        ("put", "/v1/queues/bad name/limits", {"json": {}}),
        ("post", "/v1/queues/%00/pause", {}),
        ("post", "/v1/queues/bad name/resume", {}),
        ("get", "/v1/tasks", {}),
        ("post", "/v1/tokens", {"json": {"queue": "default", "ttl_s": 60}}),
        ("post", "/v1/tokens", {"json": {"runs": [NOBODY]}}),
        ("get", "/v1/workers", {}),
        ("post", "/v1/schedules", {"json": schedule}),
        ("post", "/v1/schedules", {"json": schedule}),
        ("post", "/v1/schedules", {"json": {**schedule, "cron": "* * * * *"}}),
        ("post", "/v1/schedules", {"data": b"nope"}),
        ("get", "/v1/schedules", {}),
        ("delete", "/v1/schedules/nightly", {}),
        ("delete", "/v1/schedules/nightly", {}),
        ("delete", "/v1/schedules/a%00b", {}),
        ("post", "/v1/webhooks", {"json": {"url": "https://93.184.215.14/", "events": ["*"]}}),
        ("post", "/v1/webhooks", {"json": {"url": "http://127.0.0.1/", "events": ["*"]}}),
        ("post", "/v1/webhooks", {"data": b"nope"}),
        ("get", "/v1/webhooks", {}),
        ("post", f"{hook}/test", {}),
        ("post", f"/v1/webhooks/{NOBODY}/test", {}),
        ("get", f"{hook}/deliveries?limit=10", {}),
        ("get", f"{hook}/deliveries?limit=0", {}),
        ("get", "/v1/webhooks/nope/deliveries", {}),
        ("delete", hook, {}),
        ("delete", hook, {}),
        ("get", "/healthz", {}),
        ("get", "/readyz", {}),
        ("get", "/metrics", {}),
        ("get", "/openapi.json", {}),
    ]


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").get_json()
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    return document


def operation(doc: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented operation a request path falls under: the template with fewest params."""
    bare = path.split("?")[0]
    templates = sorted(doc["paths"], key=lambda template: template.count("{"))
    for template in templates:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), bare):
            return template, doc["paths"][template][method]
    raise AssertionError(f"{method} {path} is not in /openapi.json")


def test_every_answer_is_a_documented_status_with_a_documented_body(
    client: FlaskClient, services: Services, doc: dict[str, Any]
) -> None:
    run_id = client.post("/v1/runs", json={"task": "demo.echo"}, headers=ALPHA).get_json()["id"]
    finished_id = client.post("/v1/runs", json={"task": "demo.echo"}, headers=ALPHA).get_json()
    finished_id = finished_id["id"]
    with services.pool.connection() as conn:
        runs.request_cancel(conn, "alpha", finished_id)
    webhook = {"url": "https://93.184.215.14/hook", "events": ["run.succeeded"]}
    webhook_id = client.post("/v1/webhooks", json=webhook, headers=ALPHA).get_json()["id"]
    exercised: dict[tuple[str, str], set[int]] = {}
    for method, path, kwargs in cases(run_id, finished_id, webhook_id):
        for headers in (ALPHA, {}, auth("nope")):
            # the query's token, if any, is what authenticates: no header then
            sent = {**({} if "token=" in path else headers), **kwargs.get("headers", {})}
            response = getattr(client, method)(path, **{**kwargs, "headers": sent})
            template, op = operation(doc, method, path)
            check_documented(doc, op, response, f"{method} {path} with {sent}")
            exercised.setdefault((template, method), set()).add(response.status_code)
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == set(exercised)
    assert exercised[("/v1/runs/{id}/tail", "get")] >= {400, 401, 404, 426}
    assert exercised[("/v1/runs/{id}/events", "get")] >= {200, 204, 400, 401, 404, 422}
    assert exercised[("/v1/runs", "get")] >= {200, 400, 401, 422}
