"""Bulk cancel on the real stack: a running demo.sleep run selected by a filter is stopped by
its `rq worker` and ends cancelled, beside a delayed one cancelled at once; its timings
as it runs and once it has ended."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import auth
from tests.e2e.api import get_events, get_run, post_run, status_is
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_bulk_cancel_stops_a_running_run(stack: Stack) -> None:
    running = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 60}})
    wait_for(status_is(stack, running["id"], "running"), 30, 0.05, "the run to start")
    delayed = post_run(stack, {"task": "demo.sleep", "input": {"seconds": 60}, "delay_ms": 60_000})
    shown = get_run(stack, running["id"])
    assert set(shown["timings"]) == {"queued_ms", "started_ms"}

    response = requests.post(
        f"{stack.base}/v1/runs/cancel", json={"task": "demo.sleep"}, headers=auth(), timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"matched": 2, "changed": 2}

    ended = wait_for(status_is(stack, running["id"], "cancelled"), 10, 0.05, "the cancel")
    assert ended["eta"] is None and set(ended["timings"]) == {
        "queued_ms", "started_ms", "finished_ms"
    }  # fmt: skip
    assert ended["timings"]["finished_ms"] < 30_000  # stopped, not slept out
    assert [e["type"] for e in get_events(stack, running["id"])][-1] == "run.cancelled"
    assert get_run(stack, delayed["id"])["status"] == "cancelled"
