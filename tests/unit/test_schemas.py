"""The request schemas: every field of POST /v1/runs and /v1/schedules, its range and type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.tasks import Registry
from app.web.schemas import RunCreate, RunListQuery, ScheduleCreate

REGISTRY = Registry()
REGISTRY.task("demo.echo")(lambda ctx, value: value)


def run(**fields: Any) -> RunCreate:
    return RunCreate.model_validate({"task": "demo.echo", **fields}, context={"registry": REGISTRY})


def bad_fields(model: type, data: Any, **context: Any) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, context=context or None)
    return {".".join(str(p) for p in error["loc"]) for error in caught.value.errors()}


def bad_run(**fields: Any) -> set[str]:
    return bad_fields(RunCreate, {"task": "demo.echo", **fields}, registry=REGISTRY)


def test_defaults() -> None:
    spec = run()
    assert (spec.input, spec.queue, spec.priority, spec.metadata) == (None, None, 5, {})
    assert spec.delay_ms is spec.run_at is spec.max_attempts is spec.backoff is None


def test_task_is_required_and_registered() -> None:
    assert bad_fields(RunCreate, {}, registry=REGISTRY) == {"task"}
    assert bad_run(task="no.such") == {"task"}
    assert bad_run(task=5) == {"task"}
    assert bad_run(task="") == {"task"}


def test_input_is_any_json() -> None:
    for value in (None, 1, "x", [1, {"a": None}], {"deep": {"er": [True]}}):
        assert run(input=value).input == value


@pytest.mark.parametrize("queue", ["", " ", "a b", "a/b", "x" * 101, 5, ".hidden"])
def test_queue_names_are_plain(queue: Any) -> None:
    assert bad_run(queue=queue) == {"queue"}


def test_queue_accepts_plain_names() -> None:
    assert run(queue="emails.high-1_x").queue == "emails.high-1_x"


@pytest.mark.parametrize("priority", [0, 11, -1, "5", 5.0, True, None])
def test_priority_is_an_int_from_1_to_10(priority: Any) -> None:
    assert bad_run(priority=priority) == {"priority"}


def test_priority_bounds_are_inclusive() -> None:
    assert run(priority=1).priority == 1 and run(priority=10).priority == 10


@pytest.mark.parametrize("delay", [-1, "10", 1.5, True, 10**15])
def test_delay_ms_is_a_non_negative_int(delay: Any) -> None:
    assert bad_run(delay_ms=delay) == {"delay_ms"}


def test_run_at_is_rfc3339_with_a_zone() -> None:
    assert run(run_at="2030-01-02T03:04:05Z").run_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert run(run_at="2030-01-02T05:04:05+02:00").run_at == datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    for value in ("2030-01-02T03:04:05", "tomorrow", 1893456000, "", None):
        if value is not None:
            assert bad_run(run_at=value) == {"run_at"}


def test_delay_ms_and_run_at_are_mutually_exclusive() -> None:
    assert bad_run(delay_ms=10, run_at="2030-01-01T00:00:00Z") == {"run_at"}
    assert run(delay_ms=0).delay_ms == 0


@pytest.mark.parametrize("attempts", [0, 101, "3", 2.0])
def test_max_attempts_is_1_to_100(attempts: Any) -> None:
    assert bad_run(max_attempts=attempts) == {"max_attempts"}


def test_backoff() -> None:
    spec = run(backoff={"type": "exponential", "delay_ms": 100, "jitter": 0.5})
    assert spec.backoff is not None and spec.backoff.jitter == 0.5
    assert run(backoff={"type": "fixed", "delay_ms": 0}).backoff.jitter == 0  # type: ignore[union-attr]
    assert bad_run(backoff={"type": "linear", "delay_ms": 1}) == {"backoff.type"}
    assert bad_run(backoff={"type": "fixed", "delay_ms": -1}) == {"backoff.delay_ms"}
    assert bad_run(backoff={"type": "fixed", "delay_ms": 1, "jitter": 1.5}) == {"backoff.jitter"}
    assert bad_run(backoff={"type": "fixed", "delay_ms": 1, "extra": 1}) == {"backoff.extra"}
    assert bad_run(backoff={"type": "fixed"}) == {"backoff.delay_ms"}
    assert bad_run(backoff="fixed") == {"backoff"}


def test_timeout_s_is_a_positive_number() -> None:
    assert run(timeout_s=1).timeout_s == 1.0
    assert run(timeout_s=0.25).timeout_s == 0.25
    for value in (0, -1, "5", True):
        assert bad_run(timeout_s=value) == {"timeout_s"}


def test_metadata_is_an_object_of_at_most_16_kib() -> None:
    assert run(metadata={"a": "x" * 16000}).metadata["a"] == "x" * 16000
    assert bad_run(metadata={"a": "x" * 17000}) == {"metadata"}
    assert bad_run(metadata=[1]) == {"metadata"}


def test_unknown_fields_are_refused() -> None:
    assert bad_run(priorty=3) == {"priorty"}


def test_the_body_must_be_an_object() -> None:
    assert bad_fields(RunCreate, [1], registry=REGISTRY) == {""}


def test_list_query_parses_text_and_bounds_limit() -> None:
    assert RunListQuery.model_validate({"limit": "7", "status": "queued"}).limit == 7
    assert bad_fields(RunListQuery, {"limit": "0"}) == {"limit"}
    assert bad_fields(RunListQuery, {"limit": "201"}) == {"limit"}
    assert bad_fields(RunListQuery, {"status": "done"}) == {"status"}


def schedule(**fields: Any) -> dict[str, Any]:
    return {"name": "nightly", "task": "demo.echo", **fields}


def test_schedule_needs_exactly_one_trigger() -> None:
    ok = ScheduleCreate.model_validate(schedule(cron="*/5 * * * *"), context={"registry": REGISTRY})
    assert ok.cron == "*/5 * * * *" and ok.every_s is None
    assert ScheduleCreate.model_validate(schedule(every_s=2.5)).every_s == 2.5
    assert bad_fields(ScheduleCreate, schedule()) == {""}
    assert bad_fields(ScheduleCreate, schedule(cron="* * * * *", every_s=5)) == {""}


def test_schedule_rules() -> None:
    assert bad_fields(ScheduleCreate, schedule(cron="61 * * * *")) == {"cron"}
    assert bad_fields(ScheduleCreate, schedule(cron="0 0 30 2 *")) == {"cron"}  # never fires
    assert bad_fields(ScheduleCreate, schedule(every_s=0)) == {"every_s"}
    assert bad_fields(ScheduleCreate, schedule(every_s="5")) == {"every_s"}
    assert bad_fields(ScheduleCreate, schedule(name="a b", every_s=1)) == {"name"}
    assert bad_fields(ScheduleCreate, schedule(task="x", every_s=1), registry=REGISTRY) == {"task"}
    assert bad_fields(ScheduleCreate, schedule(every_s=1, priority=2)) == {"priority"}
