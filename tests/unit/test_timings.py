"""A run's timings and eta worked out from its record, and the per-process cache of medians."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app import timings
from app.domain import Run, RunStatus
from app.web.responses import RunOut, Timings

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(**fields: Any) -> Run:
    base: dict[str, Any] = {
        "id": "00000000-0000-0000-0000-000000000001", "task": "t", "queue": "default",
        "status": RunStatus.QUEUED, "input": None, "result": None, "error": None, "attempt": 0,
        "max_attempts": 1, "priority": 5, "progress": None, "metadata": {},
        "idempotency_key": None, "created_at": T0, "scheduled_for": T0, "started_at": None,
        "finished_at": None, "last_seq": 1, "tenant": "alpha",
    }  # fmt: skip
    return Run(**{**base, **fields})


def ms(n: float) -> timedelta:
    return timedelta(milliseconds=n)


def test_timings_are_the_parts_that_happened_in_whole_milliseconds() -> None:
    assert timings.timings_of(run()) == {}
    assert timings.timings_of(run(first_dispatched_at=T0 + ms(3.7))) == {"queued_ms": 3}
    ended = run(
        first_dispatched_at=T0 - ms(0.001), started_at=T0 + ms(20), finished_at=T0 + ms(1500)
    )
    assert timings.timings_of(ended) == {"queued_ms": 0, "started_ms": 20, "finished_ms": 1500}
    cancelled_queued = run(first_dispatched_at=T0, finished_at=T0 + ms(9))
    assert timings.timings_of(cancelled_queued) == {"queued_ms": 0, "finished_ms": 9}


def test_the_eta_of_a_running_run_follows_its_progress_rate_else_the_median() -> None:
    started = run(status=RunStatus.RUNNING, started_at=T0)
    now = T0 + timedelta(seconds=10)
    half = run(status=RunStatus.RUNNING, started_at=T0, progress={"percent": 50, "message": ""})
    assert timings.eta_of(half, now, median_s=99) == T0 + timedelta(seconds=20)
    assert timings.eta_of(started, now, median_s=4.5) == T0 + timedelta(seconds=4.5)
    assert timings.eta_of(started, now, median_s=None) is None
    zero = run(status=RunStatus.RUNNING, started_at=T0, progress={"percent": 0, "message": ""})
    assert timings.needs_median(zero) and not timings.needs_median(half)
    assert timings.eta_of(run(status=RunStatus.SUCCEEDED, started_at=T0), now, 1.0) is None


class FakePool:
    @contextmanager
    def connection(self) -> Any:
        yield None


def test_medians_are_read_once_per_task_for_a_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[tuple[str, list[str]]] = []

    def median_durations(conn: Any, tenant: str, tasks: list[str]) -> dict[Any, Any]:
        reads.append((tenant, sorted(tasks)))
        return {(tenant, task): 2.0 for task in tasks if task != "new"}

    monkeypatch.setattr(timings, "median_durations", median_durations)
    clock = [0.0]
    cache = timings.TaskDurations(FakePool(), ttl_s=5, clock=lambda: clock[0])  # type: ignore[arg-type]

    keys = {("alpha", "a"), ("alpha", "new"), ("beta", "a")}
    assert cache.medians(keys) == {("alpha", "a"): 2.0, ("alpha", "new"): None, ("beta", "a"): 2.0}
    assert sorted(reads) == [("alpha", ["a", "new"]), ("beta", ["a"])]  # one read per tenant
    clock[0] = 4.9
    assert cache.medians(keys)[("alpha", "new")] is None and len(reads) == 2  # kept, even None
    clock[0] = 5.1
    cache.medians({("alpha", "a")})
    assert reads[-1] == ("alpha", ["a"]) and len(reads) == 3


def test_the_document_says_a_part_not_yet_happened_is_absent_not_null() -> None:
    schema = Timings.model_json_schema(mode="serialization")
    assert "required" not in schema and schema["additionalProperties"] is False
    for part in ("queued_ms", "started_ms", "finished_ms"):
        documented = {k: v for k, v in schema["properties"][part].items() if k != "title"}
        assert documented == {"minimum": 0, "type": "integer"}  # no null, no default
    assert "timings" in RunOut.model_json_schema()["required"]
