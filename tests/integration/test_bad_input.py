"""Values JSON can spell but Postgres cannot store (NUL, lone surrogates) or a double cannot hold
(1e400): 422 naming the field, like any other rule broken, on every route that takes them."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import auth

ALPHA = auth("tok-alpha")
RUN = '{"task": "demo.echo", %s}'
SCHEDULE = '{"name": "nightly", "task": "demo.echo", "every_s": 60, %s}'


def named_fields(response: Any) -> set[str]:
    assert response.status_code == 422, response.data
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["type"].endswith("/validation")
    return {error["field"] for error in body["errors"]}


@pytest.mark.parametrize(
    ("fragment", "fields"),
    [
        (r'"input": {"text": "a\u0000b"}', {"input.text"}),
        (r'"input": {"text": "\ud800"}', {"input.text"}),
        (r'"input": {"text": "\udfff tail"}', {"input.text"}),
        (r'"input": 1e400', {"input"}),
        (r'"input": {"n": -1e400}', {"input.n"}),
        (r'"input": {"items": [1, {"deep": "\u0000"}]}', {"input.items[1].deep"}),
        (r'"metadata": {"x": "\u0000"}', {"metadata.x"}),
        (r'"metadata": {"x": 1e999}', {"metadata.x"}),
        (r'"metadata": {"\u0000": 1}', {"metadata"}),  # a bad key: its object is named
        (r'"metadata": {"x": "\ud83d"}, "input": "\u0000"', {"metadata.x", "input"}),
    ],
)
def test_submit_names_the_field_holding_an_unstorable_value(
    client: FlaskClient, fragment: str, fields: set[str]
) -> None:
    response = client.post("/v1/runs", data=RUN % fragment, headers=ALPHA)
    assert named_fields(response) == fields
    assert all(field in response.get_json(force=True)["detail"] for field in fields)


@pytest.mark.parametrize(
    ("fragment", "fields"),
    [
        (r'"input": {"text": "\u0000"}', {"input.text"}),
        (r'"input": ["\ud800"]', {"input[0]"}),
        (r'"input": {"big": 1e400}', {"input.big"}),
    ],
)
def test_schedules_name_the_field_holding_an_unstorable_value(
    client: FlaskClient, fragment: str, fields: set[str]
) -> None:
    response = client.post("/v1/schedules", data=SCHEDULE % fragment, headers=ALPHA)
    assert named_fields(response) == fields


def test_a_refused_body_does_not_use_up_its_idempotency_key(client: FlaskClient) -> None:
    headers = {**ALPHA, "Idempotency-Key": "k-nul"}
    refused = client.post("/v1/runs", data=RUN % r'"input": "\u0000"', headers=headers)
    assert named_fields(refused) == {"input"}
    created = client.post("/v1/runs", data=RUN % '"input": "ok"', headers=headers)
    assert created.status_code == 201, created.data


def test_a_nul_in_a_list_filter_is_422_naming_the_parameter(client: FlaskClient) -> None:
    for query, field in (("task=a%00b", "task"), ("queue=%00", "queue")):
        assert named_fields(client.get(f"/v1/runs?{query}", headers=ALPHA)) == {field}


def test_a_schedule_name_no_schedule_can_have_is_not_found(client: FlaskClient) -> None:
    response = client.delete("/v1/schedules/a%00b", headers=ALPHA)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
