"""BullMQ-style queue semantics over HTTP with real `rq worker` processes from the Procfile:
backoff, priorities, delays, timeouts, cancellation, manual retry, pause and resume."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from runlane.client import Client
from tests.helpers import Stack, wait_for

pytestmark = pytest.mark.e2e

# How late a due attempt may start: the scheduler's tick plus a pop, well under a second.
LATE_S = 0.7


@pytest.fixture
def idle_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """Everything but the worker: runs wait in their queues until a test starts one."""
    return stack_factory().start_all(workers=0)


def client(stack: Stack, token: str = "tok-alpha") -> Client:
    return Client(stack.base, token, timeout=10)


def finished(api: Client, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = api.get(run_id)
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, 30, interval=0.05, message=f"run {run_id} to finish")


def times(api: Client, run_id: str, event_type: str) -> list[datetime]:
    return [datetime.fromisoformat(e["at"]) for e in api.events(run_id) if e["type"] == event_type]


def gaps(moments: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in zip(moments, moments[1:], strict=False)]


def test_fixed_backoff_waits_between_started_events(stack: Stack) -> None:
    api = client(stack)
    run = api.submit(
        "demo.fail", {"times": 2}, max_attempts=3, backoff={"type": "fixed", "delay_ms": 400}
    )
    done = finished(api, run["id"])
    assert done["status"] == "succeeded" and done["result"] == {"attempt": 3}
    waited = gaps(times(api, run["id"], "run.started"))
    print(f"\nfixed 400 ms backoff: started {waited} s apart")
    assert len(waited) == 2 and all(0.4 <= gap < 0.4 + LATE_S for gap in waited), waited
    retrying = [e["data"] for e in api.events(run["id"]) if e["type"] == "run.retrying"]
    assert [(r["attempt"], r["delay_ms"], r["error"]["type"]) for r in retrying] == [
        (1, 400, "DemoFailure"),
        (2, 400, "DemoFailure"),
    ]


def test_exponential_backoff_with_jitter_follows_the_formula(stack: Stack) -> None:
    api = client(stack)
    backoff = {"type": "exponential", "delay_ms": 300, "jitter": 0.5}
    run = api.submit("demo.fail", {"times": 3}, max_attempts=4, backoff=backoff)
    assert finished(api, run["id"])["status"] == "succeeded"
    delays = [e["data"]["delay_ms"] for e in api.events(run["id"]) if e["type"] == "run.retrying"]
    # wait before attempt n+1 is d * 2^(n-1), jittered down by up to half
    for n, delay in enumerate(delays, start=1):
        full = 300 * 2 ** (n - 1)
        assert full * 0.5 <= delay <= full, (n, delays)
    waited = gaps(times(api, run["id"], "run.started"))
    print(f"\nexponential 300 ms backoff, jitter 0.5: delays {delays} ms, started {waited} s apart")
    assert len(waited) == 3
    for gap, delay in zip(waited, delays, strict=True):
        assert delay / 1000 <= gap < delay / 1000 + LATE_S, (waited, delays)


def test_exhausted_attempts_fail_and_a_manual_retry_gets_a_fresh_budget(stack: Stack) -> None:
    api = client(stack)
    run = api.submit("demo.fail", {"times": 2}, max_attempts=2)
    failed = finished(api, run["id"])
    assert failed["status"] == "failed" and failed["attempt"] == 2
    assert failed["error"]["type"] == "DemoFailure"

    retried = api.retry(run["id"])
    assert retried["status"] == "queued"
    done = finished(api, run["id"])
    assert done["status"] == "succeeded" and done["result"] == {"attempt": 3}
    types = [e["type"] for e in api.events(run["id"])]
    assert types[-3:] == ["run.queued", "run.started", "run.succeeded"]
    assert [e["seq"] for e in api.events(run["id"])] == list(range(1, len(types) + 1))


def test_unrecoverable_fails_at_once(stack: Stack) -> None:
    api = client(stack)
    run = api.submit("demo.fail", {"times": 5, "unrecoverable": True}, max_attempts=5)
    done = finished(api, run["id"])
    assert done["status"] == "failed" and done["attempt"] == 1


def test_timeout_fails_the_attempt_and_is_retried_while_attempts_remain(stack: Stack) -> None:
    api = client(stack)
    run = api.submit("demo.sleep", {"seconds": 30}, timeout_s=0.5, max_attempts=2)
    done = finished(api, run["id"])
    assert done["status"] == "failed" and done["attempt"] == 2
    assert done["error"]["type"] == "Timeout"
    types = [e["type"] for e in api.events(run["id"])]
    assert types.count("run.retrying") == 1
    started = datetime.fromisoformat(done["started_at"])
    assert (datetime.fromisoformat(done["finished_at"]) - started).total_seconds() < 3


def test_priorities_start_lowest_first_and_fifo_within_one(
    idle_stack: Stack,
) -> None:
    api = client(idle_stack)
    priorities = [5, 1, 10, 1, 5, 3, 10, 3, 1, 5]
    made = [api.submit("demo.noop", {"i": i}, priority=p) for i, p in enumerate(priorities)]
    idle_stack.start("worker")
    done = [finished(api, run["id"]) for run in made]
    by_start = [run["id"] for run in sorted(done, key=lambda run: run["started_at"])]
    expected = [made[i]["id"] for i in sorted(range(len(made)), key=lambda i: (priorities[i], i))]
    assert by_start == expected


def test_delayed_run_starts_when_due_never_early(stack: Stack) -> None:
    api = client(stack)
    run = api.submit("demo.echo", {"x": 1}, delay_ms=800)
    assert run["status"] == "delayed"
    done = finished(api, run["id"])
    assert done["status"] == "succeeded"
    late = datetime.fromisoformat(done["started_at"]) - datetime.fromisoformat(run["scheduled_for"])
    print(f"\ndelayed run started {late.total_seconds() * 1000:.0f} ms after it was due")
    assert 0 <= late.total_seconds() < LATE_S
    first = api.events(run["id"])[0]
    assert first["type"] == "run.delayed" and first["data"]["until"] == run["scheduled_for"]


def test_a_cancelled_queued_run_never_starts(idle_stack: Stack) -> None:
    api = client(idle_stack)
    doomed = api.submit("demo.echo", {"doomed": True})
    cancelled = api.cancel(doomed["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    after = api.submit("demo.echo", {"after": True})
    idle_stack.start("worker")
    # FIFO: the worker reached the cancelled run's delivery before this one's
    assert finished(api, after["id"])["status"] == "succeeded"
    assert [e["type"] for e in api.events(doomed["id"])] == ["run.queued", "run.cancelled"]
    assert api.get(doomed["id"])["attempt"] == 0


def test_pause_holds_only_the_callers_runs_until_resume(stack: Stack) -> None:
    alpha, beta = client(stack), client(stack, "tok-beta")
    paused = alpha.pause("default")
    assert paused["paused"] is True
    held = alpha.submit("demo.echo", {"held": True})
    free = beta.submit("demo.echo", {"free": True})
    # the other tenant's run in the same queue is not held back
    assert finished(beta, free["id"])["status"] == "succeeded"
    assert alpha.get(held["id"])["status"] == "queued"

    resumed = alpha.resume("default")
    assert resumed["paused"] is False
    assert finished(alpha, held["id"])["status"] == "succeeded"
