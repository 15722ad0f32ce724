"""Probes, metrics, the OpenAPI document, and errors: every failure is problem+json, none a 5xx."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from app import db
from app.config import Settings
from app.services import Services
from app.web import create_app
from runlane.embedded import free_port
from tests.conftest import auth
from tests.integration.api import BETA, submit

ALPHA = auth("tok-alpha")


def test_healthz_and_readyz_need_no_token(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_readyz_is_503_without_redis(settings: Settings, services: Services) -> None:
    down = Services(settings, services.pool, Redis(port=free_port(), retry=None), services.keys)
    response = create_app(services=down).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert "Redis" in response.get_json(force=True)["detail"]


def test_readyz_is_503_until_the_schema_is_current(
    settings: Settings, services: Services, empty_database_url: str
) -> None:
    pool = db.make_pool(empty_database_url, max_size=2)
    try:
        bare = Services(settings, pool, services.redis, services.keys)
        client = create_app(services=bare).test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "schema" in response.get_json(force=True)["detail"]
        db.migrate(empty_database_url)
        assert client.get("/readyz").status_code == 200
    finally:
        pool.close()


def test_metrics_count_requests_by_route(client: FlaskClient) -> None:
    client.get("/healthz")
    client.post("/v1/runs", json={"task": "demo.echo"}, headers=ALPHA)
    for _ in range(3):  # one run, two replays
        client.post(
            "/v1/runs", json={"task": "demo.echo"}, headers={**ALPHA, "Idempotency-Key": "m"}
        )
    client.get("/v1/runs/not-a-uuid", headers=ALPHA)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].count("charset") == 1
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'runlane_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="/v1/runs/<run_id>",status="404"' in text
    assert 'runlane_runs_created_total{queue="default"} 2.0' in text
    assert "runlane_idempotent_replays_total 2.0" in text
    assert "runlane_http_request_duration_seconds_bucket" in text


CONTRACT_PATHS = {
    "/v1/runs": {"get", "post"},
    "/v1/runs/batch": {"post"},
    "/v1/runs/cancel": {"post"},
    "/v1/runs/retry": {"post"},
    "/v1/runs/{id}": {"get"},
    "/v1/runs/{id}/cancel": {"post"},
    "/v1/runs/{id}/retry": {"post"},
    "/v1/runs/{id}/events": {"get"},
    "/v1/runs/{id}/tail": {"get"},
    "/v1/tail": {"get"},
    "/v1/queues": {"get"},
    "/v1/queues/{name}/pause": {"post"},
    "/v1/queues/{name}/resume": {"post"},
    "/v1/queues/{name}/limits": {"put"},
    "/v1/tasks": {"get"},
    "/v1/workers": {"get"},
    "/v1/tokens": {"post"},
    "/v1/webhooks": {"get", "post"},
    "/v1/webhooks/{id}": {"delete"},
    "/v1/webhooks/{id}/deliveries": {"get"},
    "/v1/webhooks/{id}/test": {"post"},
    "/v1/schedules": {"get", "post"},
    "/v1/schedules/{name}": {"delete"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
}


def test_openapi_lists_every_path_of_the_contract(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {path: set(ops) for path, ops in doc["paths"].items()} == CONTRACT_PATHS
    schemas = doc["components"]["schemas"]
    assert {"RunCreate", "RunOut", "EventOut", "Problem", "ScheduleCreate", "Backoff"} <= set(
        schemas
    )
    assert schemas["RunCreate"]["additionalProperties"] is False
    assert schemas["RunCreate"]["properties"]["priority"]["maximum"] == 10
    refs = _refs(doc)
    assert refs and all(ref.split("/")[-1] in schemas for ref in refs)
    assert (
        "text/event-stream"
        in doc["paths"]["/v1/runs/{id}/events"]["get"]["responses"]["200"]["content"]
    )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_http_errors_are_problems(client: FlaskClient) -> None:
    unknown = client.get("/nope")
    assert unknown.status_code == 404 and unknown.mimetype == "application/problem+json"
    wrong_method = client.delete("/v1/runs", headers=ALPHA)
    assert wrong_method.status_code == 405
    assert wrong_method.mimetype == "application/problem+json"
    assert "POST" in wrong_method.headers["Allow"]
    body = wrong_method.get_json(force=True)
    assert set(body) == {"type", "title", "status", "detail"} and body["title"]


def test_the_catch_all_logs_and_answers_500(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> str:
        raise RuntimeError("kaboom")

    app.add_url_rule("/boom", view_func=boom)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert "kaboom" not in response.get_data(as_text=True)
    assert any(record.getMessage() == "http.unexpected_error" for record in caplog.records)


MALFORMED_BODIES: list[Any] = [
    b"", b"null", b"[]", b'"x"', b"1e999", b"{}", b'{"task": null}', b"\x00\x01", b"\xef\xbb\xbf{}",
    b'{"task": "demo.echo", "input": 1e400}', b'{"task": "demo.echo", "priority": 1e400}',
    b'{"task": "demo.echo", "run_at": "9999-12-31T23:59:59Z"}',
    b'{"task": "demo.echo", "run_at": "0001-01-01T00:00:00+14:00"}',
    b'{"task": "demo.echo", "metadata": {"\\u0000": "\\u0000"}}',
    b'{"task": "demo.echo", "input": "\\u0000"}', b'{"task": "demo.echo", "input": "\\ud800"}',
    b'{"task": "demo.echo", "queue": "\\u0000"}', b'{"task": "\\u0000"}',
    b'{"task": "demo.echo", "timeout_s": 1e308}', b'{"task": "demo.echo", "delay_ms": 1e20}',
    b'{"name": "x", "task": "demo.echo", "every_s": 1e-300}',
    b'{"name": "\\u0000", "task": "demo.echo", "every_s": 1}',
    b'{"name": "x", "task": "demo.echo", "cron": "\\u0000"}',
]  # fmt: skip
PATHS = [
    ("post", "/v1/runs"), ("post", "/v1/schedules"), ("get", "/v1/runs"),
    ("get", "/v1/runs/%00"), ("post", "/v1/runs/%ff/cancel"), ("get", "/v1/runs/x/events"),
    ("post", "/v1/queues/%00/pause"), ("delete", "/v1/schedules/%00"),
]  # fmt: skip
QUERIES = ["", "limit=%00", "cursor=%ff%fe", "after=99999999999999999999", "status=%00",
           "limit=-1", "cursor=MjAyMC0wMS0wMVQwMDowMDowMHxub3QtYS11dWlk", "queue=%00"]  # fmt: skip


def test_no_malformed_input_gets_a_5xx(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers_variants = [
        ALPHA,
        {**ALPHA, "Idempotency-Key": "fuzz"},
        {**ALPHA, "Accept": "text/event-stream", "Last-Event-ID": "x"},
        {"Authorization": "Bearer \udcff".encode("utf-8", "surrogateescape").decode("latin-1")},
    ]
    with caplog.at_level(logging.ERROR):
        for method, path in PATHS:
            for query in QUERIES:
                for headers in headers_variants:
                    for body in MALFORMED_BODIES:
                        response = getattr(client, method)(
                            f"{path}?{query}", data=body, headers=headers
                        )
                        assert response.status_code < 500, (method, path, query, body)
    assert not [r for r in caplog.records if r.getMessage() == "http.unexpected_error"]


def test_metrics_gauges_sum_queues_over_tenants_and_count_cancels(client: FlaskClient) -> None:
    for headers in (ALPHA, BETA):
        submit(client, headers, queue="mail")
    submit(client, ALPHA, queue="reports")
    assert client.post("/v1/queues/mail/pause", headers=BETA).status_code == 200
    delayed = submit(client, ALPHA, delay_ms=600_000)
    assert client.post(f"/v1/runs/{delayed['id']}/cancel", headers=ALPHA).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    queued = {k[1]: v for k, v in found.items() if k[0] == "runlane_runs_queued"}
    runnable = {k[1]: v for k, v in found.items() if k[0] == "runlane_runs_runnable"}
    workers = {k[1]: v for k, v in found.items() if k[0] == "runlane_workers_live"}
    assert queued == {(("queue", "mail"),): 2, (("queue", "reports"),): 1}
    assert runnable == {(("queue", "mail"),): 1, (("queue", "reports"),): 1}  # beta's paused
    assert workers == {(("queue", "mail"),): 0, (("queue", "reports"),): 0}
    cancelled = ("runlane_runs_finished_total", (("queue", "default"), ("status", "cancelled")))
    assert found[cancelled] == 1
    assert "alpha" not in text and "beta" not in text  # no tenant anywhere
