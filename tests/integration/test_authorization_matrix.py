"""Who may call what: every operation of /openapi.json × {no token, a wrong token, tenant A,
tenant B, a scoped token for A's run, the same expired} → the status each must get. Generated
from the document, so a new route is covered (and must say what a scoped token may do)."""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.web import scoped
from tests.conftest import auth
from tests.integration.api import ALPHA, BETA, submit

# What a token for some runs may read: these operations, of its runs only.
SCOPED_READS = {
    ("get", "/v1/runs/{id}"),
    ("get", "/v1/runs/{id}/events"),
    ("get", "/v1/runs/{id}/tail"),
}
REFUSED = {401, 403}


def operations(client: FlaskClient) -> list[tuple[str, str]]:
    doc = client.get("/openapi.json").get_json()
    return [
        (method, path)
        for path, ops in doc["paths"].items()
        for method in ops
        if path.startswith("/v1/")
    ]


def call(client: FlaskClient, method: str, path: str, run_id: str, token: str | None) -> int:
    url = re.sub(r"\{id\}", run_id, path)
    url = re.sub(r"\{[^}]+\}", "default", url)
    kwargs: dict[str, Any] = {"headers": auth(token) if token else {}}
    if method in ("post", "put", "patch"):
        kwargs["json"] = {}
    return int(getattr(client, method)(url, **kwargs).status_code)


def test_every_operation_answers_each_kind_of_caller_as_it_must(
    app: Flask, client: FlaskClient
) -> None:
    run_id = submit(client)["id"]
    key = app.extensions["runlane.token_key"]
    run_token, _ = scoped.mint(key, "alpha", runs=[run_id], ttl_s=600)
    expired, _ = scoped.mint(key, "alpha", runs=[run_id], ttl_s=60, now=time.time() - 120)
    ops = operations(client)
    assert len(ops) >= 20 and ("post", "/v1/tokens") in ops

    wrong: list[str] = []
    for method, path in ops:
        label = f"{method.upper()} {path}"
        got = {
            "none": call(client, method, path, run_id, None),
            "wrong": call(client, method, path, run_id, "tok-nobody"),
            "expired": call(client, method, path, run_id, expired),
            "beta": call(client, method, path, run_id, BETA["Authorization"].split()[1]),
            "scoped": call(client, method, path, run_id, run_token),
            "alpha": call(client, method, path, run_id, ALPHA["Authorization"].split()[1]),
        }
        expect = {"none": {401}, "wrong": {401}, "expired": {401}}
        for who, statuses in expect.items():
            if got[who] not in statuses:
                wrong.append(f"{label} as {who}: {got[who]}, not {sorted(statuses)}")
        for who in ("alpha", "beta"):
            if got[who] in REFUSED:
                wrong.append(f"{label} as {who}: refused with {got[who]}")
        if "{id}" in path and got["beta"] != 404:  # A's run (or no such thing) is B's 404
            wrong.append(f"{label} as beta: {got['beta']}, not 404")
        if (method, path) in SCOPED_READS:
            if got["scoped"] in REFUSED:
                wrong.append(f"{label} with a token for the run: refused with {got['scoped']}")
        elif got["scoped"] != 403:
            wrong.append(f"{label} with a token for a run: {got['scoped']}, not 403")
    assert not wrong, "\n".join(wrong)
