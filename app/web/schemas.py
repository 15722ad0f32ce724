"""Request and response bodies of the HTTP API, as pydantic models.

Requests are validated strictly (a string is not a number, unknown fields are refused); the response
models document the bodies in /openapi.json, which is generated from this module.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from croniter import CroniterError, croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.domain import EventType, RunStatus

# Queue and schedule names end up in RQ queue names and Redis keys: keep them plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
MAX_BODY_BYTES = 1024 * 1024
METADATA_MAX_BYTES = 16 * 1024
TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000
MAX_INT32 = 2**31 - 1

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def _rfc3339(value: Any) -> datetime:
    """An RFC 3339 timestamp with a zone; numbers, naive or unparsable times are refused."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be an RFC 3339 timestamp, e.g. 2030-01-01T00:00:00Z") from exc
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone offset (e.g. Z or +02:00)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+14:00
        raise ValueError("is out of range") from exc


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]


def _registered(name: str, info: ValidationInfo) -> str:
    registry = (info.context or {}).get("registry")
    if registry is not None and name not in registry:
        raise ValueError(f"unknown task {name!r}")
    return name


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Backoff(Request):
    type: Literal["fixed", "exponential"]
    delay_ms: int = Field(ge=0, le=MAX_INT32)
    jitter: float = Field(default=0.0, ge=0, le=1)


class RunCreate(Request):
    """POST /v1/runs. Validate with context={"registry": ...} to refuse unknown tasks."""

    task: str = Field(min_length=1, max_length=200)
    input: Any = None
    queue: Name | None = None
    priority: int = Field(default=5, ge=1, le=10)
    delay_ms: int | None = Field(default=None, ge=0, le=TEN_YEARS_MS)
    run_at: Rfc3339 | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    backoff: Backoff | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=TEN_YEARS_MS / 1000)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _task_registered = field_validator("task")(_registered)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, separators=(",", ":")).encode()) > METADATA_MAX_BYTES:
            raise ValueError(f"must be at most {METADATA_MAX_BYTES} bytes as JSON")
        return value

    @field_validator("run_at")
    @classmethod
    def _one_start_time(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # delay_ms is declared first, so it has been validated by now
        if value is not None and info.data.get("delay_ms") is not None:
            raise ValueError("give delay_ms or run_at, not both")
        return value


class ScheduleCreate(Request):
    """POST /v1/schedules: exactly one of cron and every_s."""

    name: Name
    task: str = Field(min_length=1, max_length=200)
    input: Any = None
    queue: Name | None = None
    cron: str | None = Field(default=None, min_length=1, max_length=200)
    every_s: float | None = Field(default=None, gt=0, le=TEN_YEARS_MS / 1000)

    _task_registered = field_validator("task")(_registered)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            # valid syntax is not enough: "0 0 30 2 *" (February 30th) never fires
            croniter(value, datetime.now(UTC)).get_next(datetime)
        except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError("not a valid cron expression, or one that never fires") from exc
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleCreate:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron and every_s")
        return self


class Query(BaseModel):
    """Query strings arrive as text: numbers are parsed (lax), unknown parameters ignored."""

    model_config = ConfigDict(extra="ignore")


class RunListQuery(Query):
    status: RunStatus | None = None
    queue: str | None = None
    task: str | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = None


class EventListQuery(Query):
    after: int = Field(default=0, ge=0, le=MAX_INT32)
    limit: int = Field(default=1000, ge=1, le=1000)


# Response bodies: what the API returns, for the OpenAPI document.


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunError(Response):
    type: str
    message: str


class Progress(Response):
    percent: float = Field(ge=0, le=100)
    message: str


class RunOut(Response):
    id: str
    task: str
    queue: str
    status: RunStatus
    input: Any
    result: Any
    error: RunError | None
    attempt: int
    max_attempts: int
    priority: int
    progress: Progress | None
    metadata: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_seq: int


class RunList(Response):
    items: list[RunOut]
    next_cursor: str | None


class EventOut(Response):
    run_id: str
    seq: int = Field(ge=1)
    type: EventType
    at: datetime
    data: dict[str, Any]


class EventList(Response):
    items: list[EventOut]


class TailMessage(Response):
    """One message of the tenant-wide tail (WebSocket /v1/tail)."""

    cursor: str | None = None
    event: EventOut | None = None
    type: Literal["gap"] | None = None


class QueueCounts(Response):
    queued: int
    delayed: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class QueueOut(Response):
    name: str
    paused: bool
    workers: int
    counts: QueueCounts


class QueueList(Response):
    items: list[QueueOut]


class WorkerOut(Response):
    """A live worker process; `running` holds only the caller's runs."""

    name: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    running: list[str] = Field(description="ids of the caller's runs it is running")


class WorkerList(Response):
    items: list[WorkerOut]


class TaskOut(Response):
    name: str
    queue: str
    max_attempts: int
    backoff: Backoff | None
    timeout_s: float | None
    description: str


class TaskList(Response):
    items: list[TaskOut]


class ScheduleOut(Response):
    name: str
    task: str
    input: Any
    queue: str | None
    cron: str | None
    every_s: float | None
    next_fire_at: datetime
    created_at: datetime


class ScheduleList(Response):
    items: list[ScheduleOut]


class FieldError(Response):
    field: str
    message: str


class Problem(Response):
    """application/problem+json (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class Health(Response):
    status: str
