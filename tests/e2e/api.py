"""What the e2e tests ask of a running stack over HTTP: runs, their events, live workers."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import auth
from tests.helpers import Stack


def post_run(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{stack.base}/v1/runs", json=body, headers=auth(), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def get_run(stack: Stack, run_id: str) -> dict[str, Any]:
    return requests.get(f"{stack.base}/v1/runs/{run_id}", headers=auth(), timeout=10).json()


def get_events(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    url = f"{stack.base}/v1/runs/{run_id}/events"
    return requests.get(url, headers=auth(), timeout=10).json()["items"]


def status_is(stack: Stack, run_id: str, *statuses: str) -> Any:
    return lambda: (run := get_run(stack, run_id))["status"] in statuses and run


def live_workers(stack: Stack) -> int:
    response = requests.get(f"{stack.base}/v1/queues", headers=auth(), timeout=10)
    # a queue with no runs of this tenant is listed only while a worker serves it
    return sum(q["workers"] for q in response.json()["items"] if q["name"] == "default")
