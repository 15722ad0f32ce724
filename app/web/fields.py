"""Field types of the request bodies, each accepting exactly what the document says it does:
patterns it can show, JSON that Postgres can store, RFC 3339 times, integral numbers as ints."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

# Text that Postgres can store: no NUL (the body's strings are checked by read_json, before any
# model; the query's by query_args). For the document.
NO_NUL = r"^[^\x00]*$"
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:(?P<second>\d{2})(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})",
    re.ASCII | re.IGNORECASE,
)


def _integral(value: Any) -> Any:
    """JSON has numbers, not ints and floats: 5.0 is the integer 5 (JSON Schema agrees)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INTEGRAL = BeforeValidator(_integral)  # after the bounds, so that the document shows them
# JSON that Postgres can store: no NUL in any string or key (read_json refuses it with 422,
# naming where, before any model sees the body). Recursive, so a component of the document.
STORABLE_JSON: dict[str, Any] = {
    "description": "Any JSON value without a NUL character (U+0000) in its strings or keys",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableJson"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
        },
    ],
}
# app.web.openapi puts the $ref to StorableJson where this marks a schema (pydantic would not).
STORABLE: dict[str, Any] = {"x-storable-json": True}
Storable = Annotated[Any, WithJsonSchema(STORABLE)]
StorableObject = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": STORABLE}
    ),
]


def _names(names: str) -> str:
    return "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in names.split())


def _cron_field(values: str) -> str:
    item = rf"(?:\*|(?:{values})(?:-(?:{values}))?)(?:/[1-9][0-9]{{0,2}})?"
    return rf"(?:{item}(?:,{item})*)"


# The cron syntax accepted, as a pattern the document can show: five fields (minute, hour, day of
# the month, month, day of the week) of numbers, names, ranges, lists and steps, or a macro.
CRON_PATTERN = (
    "^(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + " +".join(
        _cron_field(values)
        for values in (
            r"0?[0-9]|[1-5][0-9]",
            r"0?[0-9]|1[0-9]|2[0-3]",
            r"0?[1-9]|[12][0-9]|3[01]",
            r"0?[1-9]|1[0-2]|" + _names("jan feb mar apr may jun jul aug sep oct nov dec"),
            r"0?[0-7]|" + _names("sun mon tue wed thu fri sat"),
        )
    )
    + ")$"
)
# A page cursor of GET /v1/runs: the last run's created_at (microseconds since the epoch) and id.
CURSOR_PATTERN = r"^[0-9]{1,17}\.[0-9a-f]{32}$"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rfc3339(value: Any) -> datetime:
    """An RFC 3339 timestamp with a zone (`t` and `z` in any case, a leap second as the second
    after :59); numbers, other ISO 8601 forms and times past 9999 in UTC are refused."""
    match = RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be an RFC 3339 timestamp, e.g. 2030-01-01T00:00:00Z")
    text, leap = value.upper(), match["second"] == "60"
    if leap:
        text = text[: match.start("second")] + "59" + text[match.end("second") :]
    try:
        parsed = datetime.fromisoformat(text).astimezone(UTC)
        return parsed + timedelta(seconds=1) if leap else parsed
    except ValueError as exc:  # e.g. February 30th
        raise ValueError("must be an RFC 3339 timestamp, e.g. 2030-01-01T00:00:00Z") from exc
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+14:00
        raise ValueError("is out of range") from exc


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]


# The document lists the app's registered task names where this marks a field (app.web.openapi).
REGISTERED_TASK: dict[str, Any] = {"x-registered-task": True}
