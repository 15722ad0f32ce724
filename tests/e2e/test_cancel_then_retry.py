"""A run cancelled while running, then retried, runs its task in full on real `rq worker`
processes, one attempt at a time and with attempts in threads: the cancel belonged to the
attempt it stopped, never to the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runlane.client import Client
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e


def status_is(api: Client, run_id: str, status: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        run = api.get(run_id)
        return run if run["status"] == status else None

    return check


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_a_retried_run_does_all_its_work(
    stack_factory: Callable[..., Stack], concurrency: str
) -> None:
    stack = stack_factory(RUNLANE_WORKER_CONCURRENCY=concurrency).start_all()
    api = Client(stack.base, "tok-alpha", timeout=10)
    run = api.submit("demo.progress", {"steps": 8, "interval_ms": 150})
    wait_for(
        lambda: any(e["type"] == "run.progress" for e in api.events(run["id"])),
        30, 0.05, "the first attempt's progress",
    )  # fmt: skip
    api.cancel(run["id"])
    wait_for(status_is(api, run["id"], "cancelled"), 30, 0.05, "the cancel")
    cancelled_at = api.get(run["id"])["last_seq"]

    api.retry(run["id"])
    done = wait_for(status_is(api, run["id"], "succeeded"), 30, 0.05, "the retried run")

    assert done["attempt"] == 2 and done["result"] == {"steps": 8}
    later = [e for e in api.events(run["id"]) if e["seq"] > cancelled_at]
    steps = [e["data"]["message"] for e in later if e["type"] == "run.progress"]
    assert steps == [f"step {i}/8" for i in range(1, 9)], "the second attempt did every step"
    assert [e["type"] for e in later if e["type"] == "run.cancelled"] == []
