"""Webhooks end to end (contract §8): the Procfile's web, worker, relay, scheduler and webhooks
processes, a receiver on loopback verifying every signature, refusals retried, the webhooks
process SIGKILLed and Redis emptied mid-stream, and a dead endpoint beside a healthy one."""

from __future__ import annotations

import statistics
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from runlane.embedded import free_port
from tests.conftest import auth
from tests.helpers import Stack, wait_for
from tests.webhook_receiver import Receiver, dead_endpoint, events_of, receiver

pytestmark = pytest.mark.e2e

FAST_RETRIES = {
    "RUNLANE_WEBHOOKS_ALLOW_PRIVATE": "1",  # the receiver is on loopback
    "RUNLANE_WEBHOOKS_RETRY_SCALE": "0.01",  # retries after about 50 ms, 300 ms, 1.2 s, ...
    "RUNLANE_WEBHOOKS_TIMEOUT_SECONDS": "2",  # a dead endpoint's attempts end sooner (and the stop)
}


def start(stack_factory: Callable[..., Stack], **env: str) -> Stack:
    stack = stack_factory(**FAST_RETRIES, **env).start_all()
    stack.start("webhooks")
    return stack


def make_endpoint(stack: Stack, hook: Receiver | str, events: list[str]) -> dict[str, Any]:
    url = hook if isinstance(hook, str) else hook.url
    response = requests.post(
        f"{stack.base}/v1/webhooks", json={"url": url, "events": events}, headers=auth(), timeout=10
    )
    assert response.status_code == 201, response.text
    endpoint = response.json()
    if isinstance(hook, Receiver):
        hook.secret = endpoint["secret"]
    return endpoint


def submit_batch(stack: Stack, count: int) -> list[str]:
    body = {"runs": [{"task": "demo.echo", "input": {"n": i}} for i in range(count)]}
    response = requests.post(f"{stack.base}/v1/runs/batch", json=body, headers=auth(), timeout=30)
    assert response.status_code == 201, response.text
    return [run["id"] for run in response.json()["items"]]


def all_events(stack: Stack, run_ids: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every event of the runs, once each has ended, keyed (run_id, seq)."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for run_id in run_ids:
        url = f"{stack.base}/v1/runs/{run_id}/events"

        def ended(url: str = url) -> list[dict[str, Any]]:
            items = requests.get(url, headers=auth(), timeout=10).json()["items"]
            return items if items and items[-1]["type"] == "run.succeeded" else []

        for event in wait_for(ended, 60, interval=0.1, message=f"run {run_id} to succeed"):
            found[(event["run_id"], event["seq"])] = event
    return found


def drop_redis_keys(redis: Redis, prefix: str) -> None:
    """Redis emptied, as far as this test's stack can tell: every key of its prefix gone."""
    keys = list(redis.scan_iter(match=f"{prefix}*", count=1000))
    keys += list(redis.scan_iter(match=f"rq:*{prefix}*", count=1000))
    if keys:
        redis.delete(*keys)


def refused_twice(event: dict[str, Any]) -> int:
    """Every run.succeeded of a run whose id starts with 0-3 gets a 500 at its first two tries."""
    return 2 if event.get("type") == "run.succeeded" and event["run_id"][0] in "0123" else 0


def test_every_event_arrives_signed_across_refusals_a_kill_and_an_emptied_redis(
    stack_factory: Callable[..., Stack], redis: Redis, prefix: str
) -> None:
    stack = start(stack_factory)
    with receiver(refuse=refused_twice) as hook:
        endpoint = make_endpoint(stack, hook, ["*"])
        first = submit_batch(stack, 100)
        wait_for(lambda: len(hook.unique()) >= 60, 60, message="deliveries to start")
        stack.kill("webhooks")  # SIGKILL mid-stream: its claims are retaken after their lease
        drop_redis_keys(redis, prefix)
        second = submit_batch(stack, 100)
        stack.start("webhooks")
        expected = all_events(stack, first + second)
        wait_for(
            lambda: events_of(hook.unique()) >= set(expected),
            60,
            interval=0.1,
            message="every event at the receiver",
        )
        received = hook.unique()
        assert hook.bad_signatures == 0
        assert events_of(received) == set(expected)  # nothing lost, nothing of another tenant
        assert len(received) == len(expected)  # one webhook-id per event: repeats share it
        for item in hook.accepted:  # repeats (a killed claim's, taken again) are the same message
            assert item.body == received[item.webhook_id].body
            assert item.body == expected[(item.body["run_id"], item.body["seq"])]  # tails' JSON
        print(f"\n{len(expected)} events, {len(hook.accepted) - len(received)} repeated deliveries")
        refused = [wid for wid, r in received.items() if refused_twice(r.body)]
        assert len(refused) > 10 and all(hook.tries[wid] >= 3 for wid in refused)
        url = f"{stack.base}/v1/webhooks/{endpoint['id']}/deliveries?limit=500"

        def refused_then_succeeded() -> list[dict[str, Any]]:
            # a success is recorded just after its 2xx (or, if the killed process sent it, by
            # the next try once its lease has run out)
            items = requests.get(url, headers=auth(), timeout=10).json()["items"]
            answered_500 = [a for a in items if a["status_code"] == 500]
            done = all(a["delivery_status"] == "succeeded" for a in answered_500)
            return answered_500 if done else []

        answered_500 = wait_for(refused_then_succeeded, 30, interval=0.2, message="the records")
        assert all(a["next_attempt_at"] and a["error"] == "answered 500" for a in answered_500)
    assert all(p.poll() is None for name in ("web", "relay") for p in stack.procs[name])


def lags(hook: Receiver, run_ids: set[str]) -> list[float]:
    """Seconds from each run.succeeded of these runs (its `at`) to its arrival."""
    found = []
    for item in hook.unique().values():
        if item.body["type"] == "run.succeeded" and item.body["run_id"] in run_ids:
            at = datetime.fromisoformat(item.body["at"].replace("Z", "+00:00")).timestamp()
            found.append(item.at - at)
    return found


def healthy_lag(stack: Stack, hook: Receiver, count: int) -> list[float]:
    run_ids = set(submit_batch(stack, count))
    wait_for(lambda: len(lags(hook, run_ids)) == count, 30, message="the healthy deliveries")
    return sorted(lags(hook, run_ids))


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def test_a_dead_endpoint_does_not_slow_a_healthy_one(
    stack_factory: Callable[..., Stack],
) -> None:
    metrics_port = free_port()
    stack = stack_factory(**FAST_RETRIES).start_all()
    stack.start("webhooks", {"RUNLANE_METRICS_PORT": str(metrics_port)})
    with receiver() as hook, dead_endpoint() as dead:
        healthy = make_endpoint(stack, hook, ["run.succeeded"])
        # a ping first: the process is up and connected before anything is measured
        url = f"{stack.base}/v1/webhooks/{healthy['id']}/test"
        assert requests.post(url, headers=auth(), timeout=10).status_code == 202
        wait_for(lambda: hook.unique(), 30, message="the ping")
        alone = healthy_lag(stack, hook, 40)
        for _ in range(3):  # more slots than one endpoint may hold: each would be taken
            make_endpoint(stack, dead, ["*"])
        beside = healthy_lag(stack, hook, 40)
    print(
        f"\nhealthy endpoint's lag, event to 2xx: alone p50 {statistics.median(alone) * 1000:.0f}"
        f" ms, p95 {p95(alone) * 1000:.0f} ms; beside 3 dead endpoints (360 hanging deliveries)"
        f" p50 {statistics.median(beside) * 1000:.0f} ms, p95 {p95(beside) * 1000:.0f} ms"
    )
    # Unbounded, the dead endpoints' 360 attempts (2 s each) would hold all 32 threads for 20 s.
    assert p95(beside) < max(1.5, 3 * p95(alone))
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    samples = {
        (sample.name, sample.labels.get("outcome")): sample.value
        for family in text_string_to_metric_families(scraped.decode())
        for sample in family.samples
    }
    assert samples[("runlane_webhook_deliveries_total", "succeeded")] == 81  # and the ping
    assert samples[("runlane_webhook_delivery_lag_seconds_count", None)] == 81
    assert samples[("runlane_webhook_deliveries_total", "failed")] == 0
