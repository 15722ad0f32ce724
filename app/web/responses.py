"""Response bodies of the HTTP API, as pydantic models: they document the bodies in
/openapi.json, and the tests validate every response against them. The run, the event and the
schedule are derived from their one definition (app.domain, app.schedules)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.domain import Event, Record, Run, RunStatus, api_fields
from app.schedules import Schedule
from app.web.schemas import Backoff
from app.webhooks import Attempt, Endpoint


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunError(Response):
    type: str
    message: str


class Progress(Response):
    percent: float = Field(ge=0, le=100)
    message: str


class Waiting(Response):
    """Why a run that is not running waits (contract §5.2)."""

    reason: Literal[
        "delayed", "backoff", "paused", "no_workers", "queued", "children", "rate_limited",
        "concurrency_limited", "key_concurrency_limited", "key_rate_limited",
    ]  # fmt: skip
    detail: str
    until: datetime | None


class ChildrenSummary(Response):
    """How a flow parent's children stand (contract §5.4)."""

    total: int = Field(ge=1)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    cancelled: int = Field(ge=0)
    pending: int = Field(ge=0)


def _omitted_when_absent(schema: dict[str, Any]) -> None:
    # A part that has not happened is left out, never null: no default to show either.
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class Timings(Response):
    """Milliseconds from the run's created_at to its first dispatch to a queue (first ever: a
    retry does not move it), to the start of its last attempt, to its end. A part that has not
    happened is left out (a queued run has only queued_ms; a delayed one none yet)."""

    model_config = ConfigDict(json_schema_extra=_omitted_when_absent)

    queued_ms: int = Field(default=None, ge=0)  # type: ignore[assignment]  # absent, never null
    started_ms: int = Field(default=None, ge=0)  # type: ignore[assignment]
    finished_ms: int = Field(default=None, ge=0)  # type: ignore[assignment]


def response_of(record: type[Record], name: str, **refined: Any) -> type[Response]:
    """The response model of a domain record: its API fields, in order, every one required;
    `refined` gives a field a more precise type for the document than the record declares."""
    hints = get_type_hints(record)
    fields: dict[str, Any] = {
        f.name: (refined.pop(f.name, hints[f.name]), ...) for f in api_fields(record)
    }
    if refined:
        raise TypeError(f"{record.__name__} has no API fields {sorted(refined)}")
    return create_model(name, __base__=Response, __module__=__name__, **fields)


# The run, the event and the schedule are defined once (app.domain, app.schedules); mypy cannot
# see the fields of a model made at run time, so it is shown a model without them.
if TYPE_CHECKING:

    class RunOut(Response): ...

    class EventOut(Response): ...

    class ScheduleOut(Response): ...

    class WebhookOut(Response): ...

    class WebhookAttemptOut(Response): ...

else:
    RunOut = response_of(
        Run,
        "RunOut",
        error=RunError | None,
        progress=Progress | None,
        children=ChildrenSummary | None,
        waiting=Waiting | None,
        eta=Annotated[
            datetime | None,
            Field(
                description="while running: when it should end, from its progress rate, else "
                "from the median duration of the tenant's last 100 succeeded runs of its task "
                "(then it may be past); null otherwise, or with neither"
            ),
        ],
        timings=Timings,
    )
    EventOut = response_of(Event, "EventOut", seq=Annotated[int, Field(ge=1)])
    ScheduleOut = response_of(Schedule, "ScheduleOut")
    WebhookOut = response_of(Endpoint, "WebhookOut")
    WebhookAttemptOut = response_of(
        Attempt,
        "WebhookAttemptOut",
        status_code=Annotated[int | None, Field(description="the answer's status; null: none")],
        error=Annotated[str | None, Field(description="why there was no 2xx answer")],
        next_attempt_at=Annotated[
            datetime | None, Field(description="the retry this attempt scheduled; null: none")
        ],
        delivery_status=Literal["pending", "succeeded", "failed"],
    )


class RunList(Response):
    items: list[RunOut]
    next_cursor: str | None


class BulkOut(Response):
    """How many of the caller's runs the selection matched, and how many of them changed."""

    matched: int = Field(ge=0)
    changed: int = Field(ge=0)


class RunBatchOut(Response):
    """The runs of a batch, in the order of its items."""

    items: list[RunOut]


class EventList(Response):
    items: list[EventOut]


class TailMessage(Response):
    """One message of the tenant-wide tail (WebSocket /v1/tail)."""

    cursor: str | None = None
    event: EventOut | None = None
    type: Literal["gap"] | None = None


class QueueCounts(Response):
    waiting: int
    queued: int
    delayed: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class RateOut(Response):
    limit: int
    period_s: float


class LimitsOut(Response):
    """A queue's limits for the caller; null: no such limit."""

    concurrency: int | None
    rate: RateOut | None
    key_concurrency: int | None
    key_rate: RateOut | None


class RecentMinute(Response):
    at: datetime = Field(description="the minute's start")
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    cancelled: int = Field(ge=0)


class RecentFinishes(Response):
    """The caller's runs of the queue that ended in each of the last minutes (throughput and
    failure rate), oldest first; the last is the minute in progress."""

    window_s: int = Field(description="the minutes covered, in seconds (600)")
    minutes: list[RecentMinute]


class QueueOut(Response):
    name: str
    paused: bool
    workers: int
    counts: QueueCounts
    counts_estimated: list[RunStatus] = Field(
        description="the statuses whose count is an estimate: above 1,000 runs of the queue and "
        "status a count is the planner's estimate (at least 1,001); up to 1,000, exact"
    )
    limits: LimitsOut
    recent: RecentFinishes


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


class ScheduleList(Response):
    items: list[ScheduleOut]


class WebhookList(Response):
    items: list[WebhookOut]


class WebhookCreated(WebhookOut):
    """The endpoint made, with its signing secret: shown this once."""

    secret: str = Field(pattern=r"^whsec_[A-Za-z0-9+/]+=*$")


class WebhookAttemptList(Response):
    items: list[WebhookAttemptOut]


class WebhookPingOut(Response):
    """The ping queued: its delivery's id and webhook-id header."""

    delivery_id: str
    webhook_id: str


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


class TokenOut(Response):
    """A scoped token: read-only, for the runs it names (or its queue's), until it expires."""

    token: str
    expires_at: datetime
