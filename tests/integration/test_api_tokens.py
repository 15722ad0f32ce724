"""Scoped tokens (contract §9) and CORS on the real app: what a browser's read-only token may
and may not do, expiry, minting rules, and cross-origin calls."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.config import Settings
from app.services import Services
from app.web import create_app, scoped
from tests.integration.api import ALPHA, BETA, submit


def mint(client: FlaskClient, headers: dict[str, str] = ALPHA, **body: Any) -> str:
    response = client.post("/v1/tokens", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_run_token_reads_its_runs_their_events_and_tails_only(client: FlaskClient) -> None:
    mine, other = submit(client), submit(client)
    token = mint(client, runs=[mine["id"]], ttl_s=600)
    body = client.post("/v1/tokens", json={"runs": [mine["id"]]}, headers=ALPHA).get_json()
    assert body["expires_at"].endswith("Z") or "+" in body["expires_at"]

    assert client.get(f"/v1/runs/{mine['id']}", headers=bearer(token)).status_code == 200
    events = client.get(f"/v1/runs/{mine['id']}/events", headers=bearer(token))
    assert events.status_code == 200 and events.get_json()["items"][0]["type"] == "run.queued"
    # a tail that passes every check is a 426 to a plain GET; outside the scope it is a 403
    assert client.get(f"/v1/runs/{mine['id']}/tail?token={token}").status_code == 426
    assert client.get(f"/v1/runs/{other['id']}/tail?token={token}").status_code == 403
    assert client.get(f"/v1/runs/{other['id']}", headers=bearer(token)).status_code == 403
    assert client.get(f"/v1/runs/{other['id']}/events", headers=bearer(token)).status_code == 403
    refused = [
        client.post(f"/v1/runs/{mine['id']}/cancel", headers=bearer(token)),
        client.post("/v1/runs", json={"task": "demo.echo"}, headers=bearer(token)),
        client.get("/v1/runs", headers=bearer(token)),
        client.get("/v1/queues", headers=bearer(token)),
        client.get(f"/v1/tail?token={token}"),
        client.post("/v1/tokens", json={"runs": [mine["id"]]}, headers=bearer(token)),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert refused[0].mimetype == "application/problem+json"
    assert client.get(f"/v1/runs/{mine['id']}", headers=ALPHA).get_json()["status"] == "queued"


def test_a_queue_token_reads_that_queues_runs(client: FlaskClient) -> None:
    reports, other = submit(client, queue="reports"), submit(client)
    token = mint(client, queue="reports")

    assert client.get(f"/v1/runs/{reports['id']}", headers=bearer(token)).status_code == 200
    assert client.get(f"/v1/runs/{other['id']}", headers=bearer(token)).status_code == 403
    listed = client.get("/v1/runs", headers=bearer(token))
    assert [run["id"] for run in listed.get_json()["items"]] == [reports["id"]]
    assert client.get("/v1/runs?queue=default", headers=bearer(token)).status_code == 403
    assert client.get(f"/v1/tail?token={token}").status_code == 426
    assert client.get(f"/v1/tail?queue=default&token={token}").status_code == 403


def test_another_tenants_run_stays_a_404(client: FlaskClient) -> None:
    theirs = submit(client, headers=BETA)
    token = mint(client, queue="default")
    assert client.get(f"/v1/runs/{theirs['id']}", headers=bearer(token)).status_code == 404
    refused = client.post("/v1/tokens", json={"runs": [theirs["id"]]}, headers=ALPHA)
    assert refused.status_code == 404
    assert refused.get_json()["errors"][0]["field"] == "runs[0]"


def test_an_expired_or_forged_token_is_a_401(app: Flask, client: FlaskClient) -> None:
    run = submit(client)
    key = app.extensions["runlane.token_key"]
    expired, _ = scoped.mint(key, "alpha", runs=[run["id"]], ttl_s=60, now=time.time() - 61)
    forged, _ = scoped.mint(b"another key", "alpha", runs=[run["id"]], ttl_s=60)
    for token in (expired, forged, expired[:-2], "rls_"):
        answer = client.get(f"/v1/runs/{run['id']}", headers=bearer(token))
        assert answer.status_code == 401, token
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert client.get(f"/v1/runs/{run['id']}", headers=bearer(expired)).get_json()["title"]
    assert client.get(f"/v1/runs/{run['id']}/tail?token={expired}").status_code == 401


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, None),
        ({"queue": "default", "runs": ["00000000-0000-4000-8000-000000000000"]}, None),
        ({"queue": "default", "ttl_s": 0}, "ttl_s"),
        ({"queue": "default", "ttl_s": 86_401}, "ttl_s"),
        ({"runs": []}, "runs"),
        ({"runs": ["not-a-uuid"]}, "runs[0]"),
        ({"queue": "no spaces"}, "queue"),
        ({"queue": "default", "scope": "all"}, "scope"),
    ],
)
def test_bad_token_requests_are_422s_naming_the_field(
    client: FlaskClient, body: dict[str, Any], field: str | None
) -> None:
    answer = client.post("/v1/tokens", json=body, headers=ALPHA)
    assert answer.status_code == 422, answer.get_json()
    assert answer.mimetype == "application/problem+json"
    if field is not None:
        assert field in {error["field"] for error in answer.get_json()["errors"]}


def test_the_key_comes_from_the_secret_or_else_the_api_tokens(settings: Settings) -> None:
    derived = scoped.key_of(None, settings.api_tokens)
    assert derived == scoped.key_of(None, dict(settings.api_tokens))  # every process agrees
    assert derived != scoped.key_of(None, {"other-token": "alpha"})
    assert scoped.key_of("s3cret", settings.api_tokens) == b"s3cret"


@pytest.fixture
def cors_client(settings: Settings, services: Services) -> FlaskClient:
    cors = dataclasses.replace(settings, cors_origins=("https://app.example",))
    services = dataclasses.replace(services, settings=cors)
    return create_app(cors, services).test_client()


def test_listed_origins_may_call_the_api_and_preflights_need_no_token(
    cors_client: FlaskClient,
) -> None:
    run = submit(cors_client)
    preflight = cors_client.options(
        f"/v1/runs/{run['id']}",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    got = cors_client.get(
        f"/v1/runs/{run['id']}", headers={**ALPHA, "Origin": "https://app.example"}
    )
    assert got.headers["Access-Control-Allow-Origin"] == "https://app.example"
    elsewhere = cors_client.get(
        f"/v1/runs/{run['id']}", headers={**ALPHA, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in elsewhere.headers


def test_without_origins_no_cors_headers_are_sent(client: FlaskClient) -> None:
    run = submit(client)
    got = client.get(f"/v1/runs/{run['id']}", headers={**ALPHA, "Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in got.headers
