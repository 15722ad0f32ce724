"""Domain records: run statuses, event types, and the Run and Event records clients see."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Self


class RunStatus(StrEnum):
    WAITING = "waiting"  # a flow's parent, for its children (contract §5.4)
    QUEUED = "queued"
    DELAYED = "delayed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class EventType(StrEnum):
    QUEUED = "run.queued"
    DELAYED = "run.delayed"
    STARTED = "run.started"
    PROGRESS = "run.progress"
    LOG = "run.log"
    RETRYING = "run.retrying"
    STALLED = "run.stalled"
    SUCCEEDED = "run.succeeded"
    FAILED = "run.failed"
    CANCELLED = "run.cancelled"
    DEBOUNCED = "run.debounced"
    WAITING = "run.waiting"
    CHILDREN_DONE = "run.children_done"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


# Field metadata of the records below, which derive from_row, to_json and the API's response
# schemas (app.web.responses) from their fields. A field is a column of the same name; the fields
# clients see come first, in the order the contract lists them.
INTERNAL: Mapping[str, Any] = {"internal": True}  # never shown to clients
UUID_TEXT: Mapping[str, Any] = {"load": str}  # a uuid column, a string everywhere else
MAYBE_UUID_TEXT: Mapping[str, Any] = {"load": lambda value: value if value is None else str(value)}
TIME: Mapping[str, Any] = {"dump": rfc3339}  # RFC 3339 UTC for clients


def enum_of(kind: type[StrEnum]) -> Mapping[str, Any]:
    """A text column holding one of `kind`'s values, its plain value for clients. Loaded by a
    lookup: calling the enum class is a microsecond and more a row."""
    return {"load": {member.value: member for member in kind}.__getitem__, "dump": _value}


def _value(member: StrEnum) -> str:
    return member.value


def api_fields(record: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of a record that clients see, in order."""
    return [f for f in dataclasses.fields(record) if not f.metadata.get("internal")]


class Record:
    """A frozen dataclass read from a row (columns named as its fields; missing columns keep
    their defaults) and shown to clients as its API fields."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        """The record of a row. Built without the dataclass's __init__, whose frozen setattr per
        field was half the cost of reading a batch's thousand rows: the fields go into the
        instance's dict as that __init__ puts them, after the same check for missing ones."""
        shape = _shape(cls)
        values = dict(row)  # a copy at C speed, less the columns beside the fields
        if not values.keys() <= shape.names:
            for extra in values.keys() - shape.names:
                del values[extra]
        for name, load in shape.loads:
            if name in values:
                values[name] = load(values[name])
        missing = shape.required - values.keys()
        if missing:
            raise TypeError(f"{cls.__name__} lacks {', '.join(sorted(missing))}")
        record = object.__new__(cls)
        fields = record.__dict__
        fields.update(shape.defaults)
        fields.update(values)
        return record

    def to_json(self) -> dict[str, Any]:
        """The record as the contract shows it to clients."""
        values = self.__dict__  # a plain dataclass's fields: faster than getattr on a hot path
        return {
            name: values[name] if dump is None else dump(values[name])
            for name, dump in _shape(type(self)).dumps
        }


class _Shape(NamedTuple):
    names: frozenset[str]  # every field
    required: frozenset[str]  # the fields without a default
    defaults: dict[str, Any]  # the others, with their defaults (no record has a factory)
    loads: list[tuple[str, Callable[[Any], Any]]]  # fields converted on the way in
    dumps: list[tuple[str, Callable[[Any], Any] | None]]  # the API fields, converted or not


_shapes: dict[type[Any], _Shape] = {}


def _shape(record: type[Any]) -> _Shape:
    """What from_row and to_json do for a record, worked out once per record type."""
    found = _shapes.get(record)
    if found is None:
        fields = dataclasses.fields(record)
        if any(f.default_factory is not dataclasses.MISSING for f in fields):
            raise TypeError(f"{record.__name__}: from_row gives no field a default factory")
        found = _shapes[record] = _Shape(
            names=frozenset(f.name for f in fields),
            required=frozenset(f.name for f in fields if f.default is dataclasses.MISSING),
            defaults={f.name: f.default for f in fields if f.default is not dataclasses.MISSING},
            loads=[(f.name, f.metadata["load"]) for f in fields if "load" in f.metadata],
            dumps=[(f.name, f.metadata.get("dump")) for f in api_fields(record)],
        )
    return found


@dataclass(frozen=True)
class Run(Record):
    id: str = field(metadata=UUID_TEXT)
    task: str
    queue: str
    status: RunStatus = field(metadata=enum_of(RunStatus))
    input: Any
    result: Any
    error: dict[str, Any] | None
    attempt: int
    max_attempts: int
    priority: int
    progress: dict[str, Any] | None
    metadata: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime = field(metadata=TIME)
    scheduled_for: datetime = field(metadata=TIME)
    started_at: datetime | None = field(metadata=TIME)
    finished_at: datetime | None = field(metadata=TIME)
    last_seq: int
    tenant: str = field(metadata=INTERNAL)
    limit_key: str | None = None
    dedupe_key: str | None = None
    parent_id: str | None = field(default=None, metadata=MAYBE_UUID_TEXT)
    # a parent's {total, succeeded, failed, cancelled, pending}, which the queries that show
    # runs select (runlane_children_summary); null for a run without children
    children: dict[str, int] | None = None
    waiting: dict[str, Any] | None = None  # not a column: app.waiting works it out when shown
    # not columns either: app.timings works them out when shown (contract §6)
    eta: datetime | None = None
    timings: dict[str, int] | None = None
    # the queries that show runs select whether the run's queue is paused for its tenant
    queue_paused: bool | None = field(default=None, metadata=INTERNAL)
    backoff: dict[str, Any] | None = field(default=None, metadata=INTERNAL)
    timeout_s: float | None = field(default=None, metadata=INTERNAL)
    request_fingerprint: str | None = field(default=None, metadata=INTERNAL)
    # attempts before the current budget (a manual retry starts one)
    attempt_base: int = field(default=0, metadata=INTERNAL)
    # why a queue limit holds it back (a waiting reason), or "released" (app.limits)
    held: str | None = field(default=None, metadata=INTERNAL)
    held_until: datetime | None = field(default=None, metadata=INTERNAL)  # a rate's next slot
    # a flow's bookkeeping (migration 0010)
    root_id: str | None = field(default=None, metadata={**INTERNAL, **MAYBE_UUID_TEXT})
    child_index: int | None = field(default=None, metadata=INTERNAL)
    on_child_failure: str | None = field(default=None, metadata=INTERNAL)
    children_total: int = field(default=0, metadata=INTERNAL)
    children_pending: int = field(default=0, metadata=INTERNAL)
    cascade_pending: bool = field(default=False, metadata=INTERNAL)
    # its first dispatch to a queue, for timings.queued_ms (migration 0011)
    first_dispatched_at: datetime | None = field(default=None, metadata=INTERNAL)
    # its latest dispatch and its stalls, for the queue wait of an attempt after a stall
    # (app.observability.metrics)
    dispatched_at: datetime | None = field(default=None, metadata=INTERNAL)
    stalls: int = field(default=0, metadata=INTERNAL)
    # the W3C traceparent of its submit (migration 0014), kept out of the contract's run object
    traceparent: str | None = field(default=None, metadata=INTERNAL)

    @property
    def budget_attempt(self) -> int:
        """Which attempt of the current budget this is (1 = the first)."""
        return self.attempt - self.attempt_base


@dataclass(frozen=True)
class Event(Record):
    run_id: str = field(metadata=UUID_TEXT)
    seq: int
    type: EventType = field(metadata=enum_of(EventType))
    at: datetime = field(metadata=TIME)
    data: dict[str, Any]
    # The event as Postgres renders it for clients (runlane_event_json, app/sql/schema.sql): the
    # very bytes the relay puts in the streams, so history and live cannot differ.
    json: str = field(metadata=INTERNAL)
    tenant: str = field(default="", metadata=INTERNAL)
    queue: str = field(default="", metadata=INTERNAL)
    tseq: int | None = field(default=None, metadata=INTERNAL)

    def to_json(self) -> dict[str, Any]:
        """The event as clients get it: parsed from its one rendering, not rendered again."""
        parsed: dict[str, Any] = json.loads(self.json)
        return parsed
