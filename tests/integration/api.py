"""What the integration tests ask of the Flask app over its test client: two tenants' tokens and
a run submitted."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.conftest import auth

ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")


def submit(client: FlaskClient, headers: dict[str, str] = ALPHA, **body: Any) -> Any:
    """POST /v1/runs of demo.echo (or the body's task), which must make the run: its JSON."""
    response = client.post("/v1/runs", json={"task": "demo.echo", **body}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()
