"""Redis turned read-only under the stack, as an old primary is after a failover (REPLICAOF: it
refuses writes with READONLY), then writable again: no process exits, /readyz says so while it
lasts, and every run submitted meanwhile succeeds once Redis takes writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from redis import Redis

from runlane.client import Client
from runlane.embedded import free_port
from tests.e2e.test_redis_restart import Restartable
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_a_read_only_redis_is_an_outage_every_process_rides_out(
    stack_factory: Callable[..., Stack], own_redis: Restartable
) -> None:
    stack = stack_factory(REDIS_URL=own_redis.url).start_all()
    api = Client(stack.base, "tok-alpha", timeout=10)
    before = api.submit("demo.noop", {})
    wait_for(lambda: api.get(before["id"])["status"] == "succeeded", 20, message="a first run")
    pids = {name: [p.pid for p in procs] for name, procs in stack.procs.items()}
    redis = Redis.from_url(own_redis.url)

    redis.replicaof("127.0.0.1", free_port())  # a primary nobody runs: it stays read-only
    try:
        wait_for(
            lambda: requests.get(f"{stack.base}/readyz", timeout=5).status_code == 503,
            10, message="/readyz to see Redis refuse writes",
        )  # fmt: skip
        during = [api.submit("demo.noop", {"n": n}, idempotency_key=f"ro-{n}") for n in range(5)]
        ready = requests.get(f"{stack.base}/readyz", timeout=5)
        assert "Redis" in ready.json()["detail"]
        wait_for(lambda: "READONLY" in stack.logs() or "ReadOnly" in stack.logs(), 15,
                 message="the processes to meet the refusal")  # fmt: skip
        assert all(p.poll() is None for procs in stack.procs.values() for p in procs)
    finally:
        redis.replicaof("NO", "ONE")

    wait_for(
        lambda: all(api.get(r["id"])["status"] == "succeeded" for r in during), 30,
        message="the runs submitted while Redis was read-only",
    )  # fmt: skip
    assert requests.get(f"{stack.base}/readyz", timeout=5).status_code == 200
    assert {name: [p.pid for p in procs] for name, procs in stack.procs.items()} == pids
    assert all(p.poll() is None for procs in stack.procs.values() for p in procs)
    assert all(api.get(r["id"])["attempt"] == 1 for r in during)
    redis.close()
