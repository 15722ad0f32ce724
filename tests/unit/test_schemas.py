"""The request schemas: every field of POST /v1/runs and /v1/schedules, its range and type; the
response schemas of the run and the event, derived from their domain records."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain import Event, Run, RunStatus
from app.tasks import Registry
from app.web.responses import EventOut, RunOut
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


@pytest.mark.parametrize("priority", [0, 11, -1, "5", 5.5, True, None])
def test_priority_is_an_int_from_1_to_10(priority: Any) -> None:
    assert bad_run(priority=priority) == {"priority"}


def test_an_integral_number_is_an_int() -> None:
    # JSON (and JSON Schema, which the document speaks) does not tell 5.0 from 5
    spec = run(
        priority=5.0, delay_ms=1e3, max_attempts=2.0, backoff={"type": "fixed", "delay_ms": 1.0}
    )
    assert (spec.priority, spec.delay_ms, spec.max_attempts) == (5, 1000, 2)
    assert type(spec.priority) is int and spec.backoff and spec.backoff.delay_ms == 1


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


def test_run_at_takes_every_rfc3339_form_and_nothing_else() -> None:
    # RFC 3339 allows lowercase t and z, and a leap second; ISO 8601's other forms are not it
    assert run(run_at="2030-01-02t03:04:05.5z").run_at == datetime(
        2030, 1, 2, 3, 4, 5, 500000, tzinfo=UTC
    )
    assert run(run_at="2030-06-30T23:59:60Z").run_at == datetime(2030, 7, 1, tzinfo=UTC)
    for value in ("2030-01-02 03:04:05Z", "20300102T030405Z", "2030-02-30T00:00:00Z"):
        assert bad_run(run_at=value) == {"run_at"}


def test_delay_ms_and_run_at_are_mutually_exclusive() -> None:
    assert bad_run(delay_ms=10, run_at="2030-01-01T00:00:00Z") == {"run_at"}
    assert run(delay_ms=0).delay_ms == 0


@pytest.mark.parametrize("attempts", [0, 101, "3", 2.5])
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


# The run and the event as CONTRACT.md §2 shows them, keys in its order.
CONTRACT_RUN = [
    "id",
    "task",
    "queue",
    "status",
    "input",
    "result",
    "error",
    "attempt",
    "max_attempts",
    "priority",
    "progress",
    "metadata",
    "idempotency_key",
    "created_at",
    "scheduled_for",
    "started_at",
    "finished_at",
    "last_seq",
    "limit_key",  # §5; the contract's list of §2 first, then those of §5 it carries
    "dedupe_key",
    "parent_id",
    "children",  # a flow's parent's summary (§5.4), null for other runs
    "waiting",
    "eta",  # §6: while running, null otherwise
    "timings",  # §6: the parts that happened
]
CONTRACT_EVENT = ["run_id", "seq", "type", "at", "data"]
NOW = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def run_row(**columns: Any) -> dict[str, Any]:
    """A runs row as Postgres returns it, with execution columns clients never see."""
    return {
        "id": uuid.UUID(int=1), "tenant": "alpha", "task": "demo.echo", "queue": "default",
        "status": "succeeded", "input": {"n": 1}, "result": [1], "error": None, "attempt": 1,
        "attempt_base": 0, "max_attempts": 3, "backoff": None, "timeout_s": None, "priority": 5,
        "progress": {"percent": 100, "message": "done"}, "metadata": {}, "idempotency_key": "k",
        "request_fingerprint": "fp", "created_at": NOW, "scheduled_for": NOW, "started_at": NOW,
        "finished_at": None, "last_seq": 3, "dispatched_at": NOW, "worker": "w",
        "lease_expires_at": None, "stalls": 0, "cancel_requested_at": None, "cancel_reason": None,
        **columns,
    }  # fmt: skip


def test_the_run_and_its_schema_have_the_contracts_fields_in_its_order() -> None:
    body = Run.from_row(run_row()).to_json()
    body["timings"] = {"started_ms": 0}  # as app.timings fills it in when shown

    assert list(body) == list(RunOut.model_fields) == CONTRACT_RUN
    assert body["id"] == str(uuid.UUID(int=1)) and body["status"] == "succeeded"
    assert body["created_at"] == "2030-01-02T03:04:05.000006Z" and body["finished_at"] is None
    RunOut.model_validate(body)  # what the API sends is what its document describes


def test_a_run_keeps_its_internal_columns_and_defaults_missing_ones() -> None:
    run = Run.from_row(run_row(attempt=4, attempt_base=2))
    assert (run.tenant, run.request_fingerprint, run.budget_attempt) == ("alpha", "fp", 2)
    bare = {k: v for k, v in run_row().items() if k not in {"backoff", "attempt_base"}}
    assert Run.from_row(bare).attempt_base == 0


def test_a_run_from_a_row_is_the_run_its_constructor_makes() -> None:
    row = run_row(event_type="run.queued", event_data={"queue": "default"}, queue_paused=False)
    run = Run.from_row(row)  # columns beside the fields (an outbox change's) are left out

    assert run == dataclasses.replace(run)  # __init__ makes an equal one from its fields
    assert not hasattr(run, "event_type")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = RunStatus.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError, match="lacks queue, task"):
        Run.from_row({k: v for k, v in row.items() if k not in {"task", "queue"}})


def test_the_event_and_its_schema_have_the_contracts_fields_in_its_order() -> None:
    rendered = (
        '{"run_id" : "00000000-0000-0000-0000-000000000001", "seq" : 1, "type" : "run.queued", '
        '"at" : "2030-01-02T03:04:05.000006Z", "data" : {"queue": "q", "priority": 5}}'
    )
    event = Event.from_row(
        {"run_id": uuid.UUID(int=1), "seq": 1, "type": "run.queued", "at": NOW,
         "data": {"queue": "q", "priority": 5}, "json": rendered, "tenant": "alpha", "queue": "q",
         "tseq": 7, "id": 12}
    )  # fmt: skip

    assert list(EventOut.model_fields) == CONTRACT_EVENT
    assert (event.run_id, event.type.terminal, event.tseq) == (str(uuid.UUID(int=1)), False, 7)
    assert list(event.to_json()) == CONTRACT_EVENT  # parsed from the text, never re-rendered
    EventOut.model_validate(event.to_json())
