"""What a view reaches through the app and the request: the services, the idempotency store,
the metrics, and the request's JSON body and query string, checked."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from flask import current_app, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from app import timings, waiting
from app.domain import Run
from app.services import Services
from app.timings import TaskDurations
from app.waiting import ServedQueues
from app.web import errors
from app.web.errors import ApiError
from app.web.idempotency import IdempotencyStore
from app.web.metrics import Metrics
from app.web.schemas import MAX_BODY_BYTES

MAX_JSON_DEPTH = 200
MAX_FIELD_ERRORS = 20  # a body full of bad values gets a short answer, not one line per value
M = TypeVar("M", bound=BaseModel)


def services() -> Services:
    return cast(Services, current_app.extensions["runlane"])


def idempotency_store() -> IdempotencyStore:
    return cast(IdempotencyStore, current_app.extensions["runlane.idempotency"])


def metrics() -> Metrics:
    return cast(Metrics, current_app.extensions["runlane.metrics"])


def served_queues() -> frozenset[str] | None:
    """The queues live workers serve (None while Redis cannot say); read at most once a second."""
    return cast(ServedQueues, current_app.extensions["runlane.served"]).get()


def shown(run: Run) -> dict[str, Any]:
    """A run as clients see it: with why it waits, its eta and its timings. (A batch's reply
    shows a thousand new runs one by one: none is running, so this asks nothing more.)"""
    medians = _medians([run]) if timings.needs_median(run) else {}
    found = waiting.shown(run, served_queues())
    return timings.shown_timings(found, run, datetime.now(UTC), medians)


def shown_all(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Runs as clients see them, with what that takes read once for them all: which queues have
    workers, and the median durations of the tasks of those running without progress."""
    served = served_queues()
    medians = _medians(runs)
    now = datetime.now(UTC)
    return [timings.shown_timings(waiting.shown(run, served), run, now, medians) for run in runs]


def _medians(runs: Sequence[Run]) -> Mapping[timings.TaskKey, float | None]:
    wanted = {(run.tenant, run.task) for run in runs if timings.needs_median(run)}
    if not wanted:
        return {}
    return cast(TaskDurations, current_app.extensions["runlane.durations"]).medians(wanted)


def relay_nudged() -> None:
    """This request's writes nudged the relay already (a submit's dispatch pipeline does), so
    the web's after-request nudge is skipped: one XADD per submit, not two."""
    g.relay_nudged = True


def needs_relay_nudge() -> bool:
    return not g.get("relay_nudged", False)


def read_json() -> Any:
    """The request body as JSON: 413 past MAX_CONTENT_LENGTH (chunked bodies too), 400 if it is
    not JSON, 422 if it nests deeper than anything sane (it would only strain Postgres) or holds
    values Postgres cannot store, naming where they are."""
    raw = request.get_data(cache=True)
    if request.content_length is None and len(raw) >= MAX_BODY_BYTES and _more_input():
        raise RequestEntityTooLarge()  # a chunked body is cut at the limit rather than refused
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "the request body is not valid JSON", slug="not-json") from exc
    if _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(
            422,
            f"the body nests more than {MAX_JSON_DEPTH} levels deep",
            slug="validation",
            errors=[{"field": "body", "message": "nested too deeply"}],
        )
    unstorable = _unstorable(body)
    if unstorable:
        raise errors.unstorable(unstorable)
    return body


def validate(model: type[M], data: Any, *, status: int = 422, **context: Any) -> M:
    """`data` validated by `model`; `status` (422 for bodies, 400 for query strings) otherwise."""
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise errors.invalid(exc, status) from exc


def query_args() -> dict[str, str]:
    """The query string, first value of each parameter; `?status=` counts as not given. A NUL
    can be in no stored value (Postgres text refuses it): 422 naming the parameter."""
    args = {name: value for name, value in request.args.items() if value != ""}
    bad = [(name, message) for name, value in args.items() if (message := _bad_text(value))]
    if bad:
        raise errors.unstorable(bad)
    return args


def _more_input() -> bool:
    # The server terminates chunked input (wsgi.input_terminated), so this read cannot block.
    return bool(request.environ["wsgi.input"].read(1))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity; JSON does not


def _bad_text(text: str) -> str | None:
    """Why Postgres (text or jsonb) cannot store `text`, if it cannot."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (e.g. \\ud800), which is not Unicode text"
    return None


def _unstorable(body: Any) -> list[tuple[str, str]]:
    """Where the parsed body holds what Postgres's jsonb refuses (NUL, lone surrogates) or what
    JSON cannot say (numbers past a double, which Python parses as inf), as (field, message):
    the field as the API names fields, `input.items[2].text`."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack and len(found) < MAX_FIELD_ERRORS:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, child in reversed(value.items()):
                message = _bad_text(key)
                if message is None:
                    stack.append((child, f"{path}.{key}" if path else key))
                else:
                    found.append((path or "body", f"has a key that {message}"))
        elif isinstance(value, list):
            items = reversed(list(enumerate(value)))
            stack.extend((child, f"{path or 'body'}[{i}]") for i, child in items)
        elif isinstance(value, str) and (message := _bad_text(value)):
            found.append((path or "body", message))
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((path or "body", "is out of range: not a finite double"))
    return found


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:
            stack.extend((child, depth + 1) for child in item)
    return deepest
