"""The webhooks API (contract §8) over the real app: make, list, delete, deliveries, test; bad
bodies and private addresses refused with 422 naming the field; each tenant sees its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.services import Services
from app.web import create_app
from tests.integration.api import ALPHA, BETA
from tests.integration.documented import DocumentedClient

PUBLIC = "https://93.184.215.14/hooks"  # an IP literal: no DNS, and nothing connects at create


def make(client: FlaskClient, headers: dict[str, str] = ALPHA, **body: object) -> dict:
    response = client.post("/v1/webhooks", json={"url": PUBLIC, "events": ["*"], **body},
                           headers=headers)  # fmt: skip
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def refused_fields(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    return [error["field"] for error in response.get_json()["errors"]]


def test_create_shows_the_secret_once_and_list_never(client: FlaskClient) -> None:
    made = make(client, events=["run.succeeded", "run.failed"], queue="emails")
    assert made["url"] == PUBLIC and made["events"] == ["run.succeeded", "run.failed"]
    assert made["queue"] == "emails" and made["created_at"].endswith("Z")
    assert made["secret"].startswith("whsec_")
    Webhook(made["secret"])  # a secret the Standard Webhooks library takes
    listed = client.get("/v1/webhooks", headers=ALPHA).get_json()["items"]
    assert listed == [{k: v for k, v in made.items() if k != "secret"}]
    assert "whsec_" not in client.get("/v1/webhooks", headers=ALPHA).get_data(as_text=True)


def test_each_endpoint_gets_a_secret_of_its_own(client: FlaskClient) -> None:
    assert make(client)["secret"] != make(client)["secret"]


def test_events_are_normalised(client: FlaskClient) -> None:
    assert make(client, events=["*", "run.failed"])["events"] == ["*"]
    assert make(client, events=["run.failed", "run.failed"])["events"] == ["run.failed"]


BAD_BODIES = [
    ({"events": ["*"]}, "url"),
    ({"url": PUBLIC}, "events"),
    ({"url": PUBLIC, "events": []}, "events"),
    ({"url": PUBLIC, "events": ["run.nope"]}, "events"),
    ({"url": PUBLIC, "events": "*"}, "events"),
    ({"url": PUBLIC, "events": ["*"], "queue": "no spaces"}, "queue"),
    ({"url": PUBLIC, "events": ["*"], "extra": 1}, "extra"),
    ({"url": "ftp://93.184.215.14/x", "events": ["*"]}, "url"),
    ({"url": "not a url", "events": ["*"]}, "url"),
    ({"url": "https://u:p@93.184.215.14/", "events": ["*"]}, "url"),
    ({"url": "https://93.184.215.14:99999/", "events": ["*"]}, "url"),
    ({"url": "https://no-such-host.invalid/", "events": ["*"]}, "url"),
]


def test_bad_bodies_are_422_naming_the_field(client: FlaskClient) -> None:
    # one app and database for all of them: each case costs a request, not a setup
    for body, field in BAD_BODIES:
        response = client.post("/v1/webhooks", json=body, headers=ALPHA)
        assert field in refused_fields(response), body


def test_a_body_that_is_not_json_is_400(client: FlaskClient) -> None:
    response = client.post("/v1/webhooks", data="{", headers={**ALPHA, "Content-Type": "x"})
    assert response.status_code == 400


PRIVATE_URLS = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",  # a name that resolves to loopback
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://0.0.0.0/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
]


def test_private_addresses_are_refused(client: FlaskClient) -> None:
    for url in PRIVATE_URLS:
        response = client.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=ALPHA)
        assert refused_fields(response) == ["url"], url
        assert "non-public" in response.get_json()["errors"][0]["message"]


@pytest.fixture
def private_client(settings: Settings, redis: Redis) -> Iterator[FlaskClient]:
    allowed = dataclasses.replace(settings, webhooks_allow_private=True)
    services = Services.build(allowed, pool_size=2)
    app: Flask = create_app(services=services)
    yield DocumentedClient(app, app.response_class, use_cookies=True)
    services.close()


def test_private_addresses_are_allowed_with_the_setting(private_client: FlaskClient) -> None:
    body = {"url": "http://localhost:9/hook", "events": ["run.succeeded"]}
    assert private_client.post("/v1/webhooks", json=body, headers=ALPHA).status_code == 201


def test_tenants_see_and_delete_only_their_own(client: FlaskClient) -> None:
    mine = make(client)
    theirs = make(client, BETA)
    assert [e["id"] for e in client.get("/v1/webhooks", headers=ALPHA).get_json()["items"]] == [
        mine["id"]
    ]
    assert client.delete(f"/v1/webhooks/{theirs['id']}", headers=ALPHA).status_code == 404
    assert client.get(f"/v1/webhooks/{theirs['id']}/deliveries", headers=ALPHA).status_code == 404
    assert client.post(f"/v1/webhooks/{theirs['id']}/test", headers=ALPHA).status_code == 404
    assert client.delete(f"/v1/webhooks/{mine['id']}", headers=ALPHA).status_code == 204
    assert client.delete(f"/v1/webhooks/{mine['id']}", headers=ALPHA).status_code == 404
    assert client.get("/v1/webhooks", headers=ALPHA).get_json()["items"] == []
    assert len(client.get("/v1/webhooks", headers=BETA).get_json()["items"]) == 1


def test_unknown_ids_are_404(client: FlaskClient) -> None:
    for bad_id in ["nope", "00000000-0000-0000-0000-000000000000"]:
        assert client.delete(f"/v1/webhooks/{bad_id}", headers=ALPHA).status_code == 404
        assert client.get(f"/v1/webhooks/{bad_id}/deliveries", headers=ALPHA).status_code == 404
        assert client.post(f"/v1/webhooks/{bad_id}/test", headers=ALPHA).status_code == 404


def test_test_queues_a_ping_and_deliveries_start_empty(client: FlaskClient) -> None:
    made = make(client)
    response = client.post(f"/v1/webhooks/{made['id']}/test", headers=ALPHA)
    assert response.status_code == 202
    ping = response.get_json()
    assert ping["webhook_id"] == "msg_" + ping["delivery_id"].replace("-", "")
    deliveries = client.get(f"/v1/webhooks/{made['id']}/deliveries?limit=5", headers=ALPHA)
    assert deliveries.status_code == 200 and deliveries.get_json() == {"items": []}


def test_a_bad_limit_is_400(client: FlaskClient) -> None:
    made = make(client)
    for limit in ["0", "501", "x"]:
        path = f"/v1/webhooks/{made['id']}/deliveries?limit={limit}"
        assert client.get(path, headers=ALPHA).status_code == 400, limit


def test_webhooks_need_a_token(client: FlaskClient) -> None:
    assert client.get("/v1/webhooks").status_code == 401
    assert client.post("/v1/webhooks", json={"url": PUBLIC, "events": ["*"]}).status_code == 401
