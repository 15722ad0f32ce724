"""Request bodies and query strings of the HTTP API, as pydantic models (the response bodies are
app.web.responses'). Requests are validated strictly: a string is not a number, unknown fields
are refused. /openapi.json documents them from these models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from croniter import CroniterError, croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from app.domain import EventType, RunStatus
from app.flows import MAX_BATCH, MAX_CHILDREN, MAX_DEPTH
from app.web.fields import (
    CRON_PATTERN,
    CURSOR_PATTERN,
    INTEGRAL,
    NO_NUL,
    REGISTERED_TASK,
    Rfc3339,
    Storable,
    StorableObject,
)

# Queue and schedule names end up in RQ queue names and Redis keys: keep them plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
MAX_BODY_BYTES = 1024 * 1024
METADATA_MAX_BYTES = 16 * 1024
TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000
MAX_INT32 = 2**31 - 1

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
UUID_PATTERN = r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$"


def _registered(name: str, info: ValidationInfo) -> str:
    registry = (info.context or {}).get("registry")
    if registry is not None and name not in registry:
        raise ValueError(f"unknown task {name!r}")
    return name


# ScheduleCreate's rule, for the document: exactly one of cron and every_s, and not null.
ONE_TRIGGER: dict[str, Any] = {
    "oneOf": [
        {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        {"required": ["every_s"], "properties": {"every_s": {"type": "number"}}},
    ]
}
# TokenCreate's rule, for the document.
ONE_SCOPE: dict[str, Any] = {
    "oneOf": [
        {"required": ["runs"], "properties": {"runs": {"type": "array"}}},
        {"required": ["queue"], "properties": {"queue": {"type": "string"}}},
    ]
}
MAX_TOKEN_RUNS = 100
# DedupeIn's rule, for the document: not both ttl_s and debounce_ms.
ONE_DEDUPE_MODE: dict[str, Any] = {
    "not": {
        "required": ["ttl_s", "debounce_ms"],
        "properties": {"ttl_s": {"type": "number"}, "debounce_ms": {"type": "integer"}},
    }
}
# RunCreate's rule, for the document: not both delay_ms and run_at.
ONE_START_TIME: dict[str, Any] = {
    "not": {
        "required": ["delay_ms", "run_at"],
        "properties": {"delay_ms": {"type": "integer"}, "run_at": {"type": "string"}},
    }
}


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Backoff(Request):
    type: Literal["fixed", "exponential"]
    delay_ms: Annotated[int, Field(ge=0, le=MAX_INT32), INTEGRAL]
    jitter: float = Field(default=0.0, ge=0, le=1)


class DedupeIn(Request):
    """A run's dedupe field (contract §5.3)."""

    model_config = ConfigDict(json_schema_extra=ONE_DEDUPE_MODE)

    key: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    ttl_s: float | None = Field(default=None, gt=0, le=TEN_YEARS_MS / 1000)
    debounce_ms: Annotated[int, Field(gt=0, le=TEN_YEARS_MS), INTEGRAL] | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> DedupeIn:
        if self.ttl_s is not None and self.debounce_ms is not None:
            raise ValueError("give ttl_s or debounce_ms, not both")
        return self


class RateIn(Request):
    limit: Annotated[int, Field(ge=1, le=MAX_INT32), INTEGRAL]
    period_s: float = Field(gt=0, le=TEN_YEARS_MS / 1000)


class LimitsIn(Request):
    """PUT /v1/queues/{name}/limits (contract §5.1): the fields given change, null removes a
    limit, the others stay."""

    concurrency: Annotated[int, Field(ge=1, le=MAX_INT32), INTEGRAL] | None = None
    rate: RateIn | None = None
    key_concurrency: Annotated[int, Field(ge=1, le=MAX_INT32), INTEGRAL] | None = None
    key_rate: RateIn | None = None


class RunFields(Request):
    """A run's own fields: RunCreate without its children."""

    model_config = ConfigDict(json_schema_extra=ONE_START_TIME)

    task: str = Field(min_length=1, max_length=200, json_schema_extra=REGISTERED_TASK)
    input: Storable = None
    queue: Name | None = None
    priority: Annotated[int, Field(ge=1, le=10), INTEGRAL] = 5
    delay_ms: Annotated[int, Field(ge=0, le=TEN_YEARS_MS), INTEGRAL] | None = None
    run_at: Rfc3339 | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100), INTEGRAL] | None = None
    backoff: Backoff | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=TEN_YEARS_MS / 1000)
    metadata: StorableObject = Field(default_factory=dict)
    limit_key: str | None = Field(default=None, min_length=1, max_length=255, pattern=NO_NUL)
    dedupe: DedupeIn | None = None

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


OnChildFailure = Literal["fail", "ignore"]


def _flow_levels() -> type[RunFields]:
    """RunCreate: a run and its children (contract §5.4), MAX_DEPTH levels of them below it at
    most. One model per level rather than a recursive one, so that the document says how deep a
    flow may go: a child too deep is refused as having a field its level does not have."""
    level = create_model(
        f"RunAtDepth{MAX_DEPTH}", __base__=RunFields, __module__=__name__,
        __doc__=f"A run {MAX_DEPTH} levels below the first: it has no children.",
    )  # fmt: skip
    for depth in range(MAX_DEPTH - 1, -1, -1):
        level = create_model(
            "RunCreate" if depth == 0 else f"RunAtDepth{depth}",
            __base__=RunFields,
            __module__=__name__,
            __doc__="POST /v1/runs. Validate with context={'registry': ...} to refuse unknown "
            "tasks."
            if depth == 0
            else f"A run {depth} levels below the first.",
            children=(  # type: ignore[arg-type]  # a type made at run time
                list[level] | None,  # type: ignore[valid-type]
                Field(default=None, min_length=1, max_length=MAX_CHILDREN),
            ),
            # without children it has no effect (a rule the document could not state)
            on_child_failure=(OnChildFailure | None, None),
        )
    return level


# mypy cannot see the fields of models made at run time: it is shown the recursive shape.
if TYPE_CHECKING:

    class RunCreate(RunFields):
        children: list[RunCreate] | None
        on_child_failure: OnChildFailure | None

else:
    RunCreate = _flow_levels()


class RunBatch(Request):
    """POST /v1/runs/batch (contract §5.5): made all together, or none of them."""

    runs: list[RunCreate] = Field(min_length=1, max_length=MAX_BATCH)


MAX_BULK_IDS = 10_000
# RunSelection's rule, for the document: not ids together with a filter.
IDS_OR_FILTERS: dict[str, Any] = {
    "not": {
        "required": ["ids"],
        "properties": {"ids": {"type": "array"}},
        "anyOf": [
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("status", "queue", "task")
        ],
    }
}


class RunSelection(Request):
    """POST /v1/runs/cancel and /v1/runs/retry: the caller's runs with these ids, or those the
    filters match (as GET /v1/runs filters); `{}` selects every run of the caller."""

    model_config = ConfigDict(json_schema_extra=IDS_OR_FILTERS)

    status: RunStatus | None = Field(default=None, strict=False)  # its value, from JSON
    queue: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)
    task: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)
    ids: list[Annotated[str, Field(pattern=UUID_PATTERN)]] | None = Field(
        default=None, max_length=MAX_BULK_IDS, description="run ids; not with the filters"
    )

    @field_validator("ids")
    @classmethod
    def _ids_or_filters(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # the filters are declared first, so they have been validated by now
        if value is not None and any(info.data.get(f) is not None for f in _FILTERS):
            raise ValueError("give ids or the filters (status, queue, task), not both")
        return value


_FILTERS = ("status", "queue", "task")


class ScheduleCreate(Request):
    """POST /v1/schedules: exactly one of cron and every_s."""

    model_config = ConfigDict(json_schema_extra=ONE_TRIGGER)

    name: Name
    task: str = Field(min_length=1, max_length=200, json_schema_extra=REGISTERED_TASK)
    input: Storable = None
    queue: Name | None = None
    cron: str | None = Field(default=None, min_length=1, max_length=200, pattern=CRON_PATTERN)
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


# A webhook's events: every type (["*"]) or a list of the contract's event types.
WEBHOOK_EVENTS = ["*", *(member.value for member in EventType)]


class WebhookCreate(Request):
    """POST /v1/webhooks: where to POST which events (of one queue, or all)."""

    # http(s) only; whether its host is one webhooks may reach is checked when it is made
    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://[^\x00]+$")
    events: list[Annotated[str, Field(json_schema_extra={"enum": WEBHOOK_EVENTS})]] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENTS)
    )
    queue: Name | None = None

    @field_validator("events")
    @classmethod
    def _all_or_types(cls, value: list[str]) -> list[str]:
        unknown = [event for event in value if event not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"not an event type: {unknown[0]!r}")
        # "*" among types means every type; repeats count once
        return ["*"] if "*" in value else list(dict.fromkeys(value))


class Query(BaseModel):
    """Query strings arrive as text: numbers are parsed (lax), unknown parameters ignored."""

    model_config = ConfigDict(extra="ignore")


class RunListQuery(Query):
    status: RunStatus | None = None
    parent_id: str | None = Field(default=None, pattern=UUID_PATTERN, description="its children")
    queue: str | None = Field(default=None, pattern=NO_NUL)
    task: str | None = Field(default=None, pattern=NO_NUL)
    idempotency_key: str | None = Field(
        default=None, pattern=NO_NUL, description="the run POST /v1/runs made with this key"
    )
    dedupe_key: str | None = Field(default=None, pattern=NO_NUL, description="runs of this key")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="next_cursor of the last page"
    )


class WebhookDeliveriesQuery(Query):
    limit: int = Field(default=50, ge=1, le=500)


class EventListQuery(Query):
    after: int = Field(default=0, ge=0, le=MAX_INT32)
    limit: int = Field(default=1000, ge=1, le=1000)


# The tails' queries, which app.web.tails checks by hand before the upgrade (as problem+json).
MAX_TAIL_NUMBER = 2**62


class RunTailQuery(Query):
    after: int = Field(default=0, ge=0, le=MAX_TAIL_NUMBER, description="send events after seq")


class TenantTailQuery(Query):
    queue: str | None = Field(default=None, description="only this queue's runs")
    cursor: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,19}$",
        description="resume after this cursor (the `cursor` of the last message)",
    )


class TokenCreate(Request):
    """POST /v1/tokens: a scoped token for these runs, or for every run of one queue."""

    model_config = ConfigDict(json_schema_extra=ONE_SCOPE)

    runs: list[Annotated[str, Field(pattern=UUID_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=MAX_TOKEN_RUNS, description="run ids; not with queue"
    )
    queue: Name | None = None
    ttl_s: Annotated[int, Field(ge=1, le=86_400), INTEGRAL] = Field(
        default=3600, description="seconds until it expires"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> TokenCreate:
        if (self.runs is None) == (self.queue is None):
            raise ValueError("give exactly one of runs and queue")
        return self
