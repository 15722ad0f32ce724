"""The API as deployed: gunicorn, an rq worker, the relay and the scheduler from the Procfile."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from app.config import Settings
from tests.conftest import auth
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e
ALPHA = auth("tok-alpha")


def run_count(settings: Settings) -> int:
    with psycopg.connect(str(settings.database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert row is not None
    return int(row[0])


def test_one_key_from_20_concurrent_clients_makes_one_run(stack: Stack, settings: Settings) -> None:
    body = {"task": "demo.echo", "input": {"hello": "world"}}
    headers = {**ALPHA, "Idempotency-Key": "concurrent-1"}
    barrier = threading.Barrier(20)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def post() -> None:
        with requests.Session() as session:
            barrier.wait()
            response = session.post(f"{stack.base}/v1/runs", json=body, headers=headers, timeout=10)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert len(responses) == 20
    ids = set()
    for response in responses:
        assert response.status_code in (201, 409), response.text
        if response.status_code == 409:
            assert int(response.headers["Retry-After"]) >= 1
        else:
            ids.add(response.json()["id"])
    assert len(ids) == 1
    assert run_count(settings) == 1


def test_an_echo_run_succeeds_with_its_input(stack: Stack) -> None:
    payload = {"n": 7, "nested": {"list": [1, "two", None]}}
    created = requests.post(
        f"{stack.base}/v1/runs", json={"task": "demo.echo", "input": payload}, headers=ALPHA,
        timeout=10,
    )  # fmt: skip
    assert created.status_code == 201
    url = f"{stack.base}{created.headers['Location']}"

    def finished() -> dict[str, Any] | None:
        run = requests.get(url, headers=ALPHA, timeout=5).json()
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    run = wait_for(finished, timeout=30, interval=0.1, message="the echo run to finish")
    assert run["status"] == "succeeded", run
    assert run["result"] == payload
    assert run["attempt"] == 1
    events = requests.get(f"{url}/events", headers=ALPHA, timeout=5).json()["items"]
    assert [e["type"] for e in events] == ["run.queued", "run.started", "run.succeeded"]

    # the same history as Server-Sent Events, resuming after Last-Event-ID, ending at the end
    sse = {**ALPHA, "Accept": "text/event-stream", "Last-Event-ID": "1"}
    with requests.get(f"{url}/events", headers=sse, stream=True, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = response.text
    assert re.findall(r"^id: (\d+)$", text, re.MULTILINE) == ["2", "3"]
    assert re.findall(r"^event: (\S+)$", text, re.MULTILINE) == ["run.started", "run.succeeded"]


def test_chunked_bodies_over_1_mib_get_413_through_gunicorn(stack: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"task": "demo.echo", "input": "'
        for _ in range(2 * 1024):
            yield b"x" * 1024
        yield b'"}'

    response = requests.post(f"{stack.base}/v1/runs", data=chunks(), headers=ALPHA, timeout=10)
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["status"] == 413


def test_metrics_add_up_over_every_web_process(stack: Stack) -> None:
    # A connection per request, so that both gunicorn workers serve some of them.
    for _ in range(40):
        assert requests.get(f"{stack.base}/healthz", timeout=5).status_code == 200
    pattern = (
        r'runlane_http_requests_total\{method="GET",route="/healthz",status="200"\} ([0-9.e+]+)'
    )
    readings = set()
    for _ in range(6):  # whichever process answers /metrics, it reports every process's count
        match = re.search(pattern, requests.get(f"{stack.base}/metrics", timeout=5).text)
        assert match
        readings.add(float(match.group(1)))
    assert readings == {40.0}


def test_openapi_served(stack: Stack) -> None:
    doc = requests.get(f"{stack.base}/openapi.json", timeout=5).json()
    assert "/v1/runs/{id}/tail" in doc["paths"]
    assert json.dumps(doc)
