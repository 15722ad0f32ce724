"""Deduplication end to end (CONTRACT §5.3): 20 concurrent submits of one key spread over two web
processes make one run, in each mode; the key holds after Redis is emptied; a debounced burst
runs once, with the last input."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from redis import Redis

from runlane.embedded import free_port
from tests.conftest import auth
from tests.helpers import Stack, wait_for

HEADERS = auth("tok-alpha")


@pytest.fixture
def bases(stack_factory: Callable[..., Stack]) -> list[str]:
    """The URLs of two web processes of one stack."""
    stack = stack_factory().start_all()
    other = free_port()
    stack.start("web", {"PORT": str(other)})
    second = Stack({**stack.env, "PORT": str(other)}, stack.logdir)
    second.wait_ready()
    return [stack.base, second.base]


def submit(base: str, **body: Any) -> requests.Response:
    return requests.post(
        f"{base}/v1/runs", json={"task": "demo.echo", **body}, headers=HEADERS, timeout=30
    )


def burst(bases: list[str], bodies: list[dict[str, Any]]) -> list[requests.Response]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda i: submit(bases[i % 2], **bodies[i]), range(len(bodies))))


def run(base: str, run_id: str) -> Any:
    return requests.get(f"{base}/v1/runs/{run_id}", headers=HEADERS, timeout=10).json()


MODES = [{"key": "k"}, {"key": "t", "ttl_s": 600}, {"key": "d", "debounce_ms": 1500}]


@pytest.mark.parametrize("dedupe", MODES)
def test_twenty_concurrent_submits_over_two_webs_make_one_run(
    bases: list[str], dedupe: dict[str, Any]
) -> None:
    # a queue no worker serves: the run must not end (and free a plain key) during the burst
    bodies = [{"input": i, "queue": "nobody-serves-this", "dedupe": dedupe} for i in range(20)]
    answers = burst(bases, bodies)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 19 + [201], statuses
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert all(a.headers.get("Deduplicated") == "true" for a in answers if a.status_code == 200)
    listed = requests.get(f"{bases[0]}/v1/runs", headers=HEADERS, timeout=10).json()["items"]
    assert [r["id"] for r in listed] == list(ids)


@pytest.mark.parametrize("dedupe", MODES)
def test_the_key_holds_after_redis_is_emptied(
    bases: list[str], redis: Redis, prefix: str, dedupe: dict[str, Any]
) -> None:
    if "debounce_ms" in dedupe:  # a window no slow machine outlasts between the two submits
        dedupe = {**dedupe, "debounce_ms": 60_000}
    first = submit(bases[0], queue="nobody-serves-this", dedupe=dedupe).json()
    keys = list(redis.scan_iter(match=f"{prefix}*")) + list(redis.scan_iter(match=f"rq:*{prefix}*"))
    assert keys  # the submit did write to Redis, so emptying it is a real loss
    redis.delete(*keys)
    again = submit(bases[1], queue="nobody-serves-this", dedupe=dedupe)
    assert (again.status_code, again.json()["id"]) == (200, first["id"])
    assert again.headers.get("Deduplicated") == "true"


def test_a_debounced_burst_runs_once_with_the_last_input(bases: list[str]) -> None:
    ids = set()
    for i in range(5):
        answer = submit(bases[i % 2], input={"n": i}, dedupe={"key": "b", "debounce_ms": 800})
        ids.add(answer.json()["id"])
    assert len(ids) == 1
    [run_id] = ids

    def done() -> Any:
        found = run(bases[0], run_id)
        return found if found["status"] == "succeeded" else None

    finished = wait_for(done, 30, message="the debounced run to finish")
    assert finished["result"] == {"n": 4} and finished["attempt"] == 1
    events = requests.get(f"{bases[0]}/v1/runs/{run_id}/events", headers=HEADERS, timeout=10)
    types = [e["type"] for e in events.json()["items"]]
    assert types[:5] == ["run.delayed"] + ["run.debounced"] * 4
    assert types[5:] == ["run.queued", "run.started", "run.succeeded"]
