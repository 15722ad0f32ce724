"""The runs a submit makes, from its validated body: the request's fields, else the task's
defaults, else the contract's; a flow's children (contract §5.4) and a batch's items (§5.5) the
same way, each checked against the limits of app.flows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import request

from app import flows, runs
from app.observability import tracing
from app.tasks import TaskDef
from app.web import errors
from app.web.auth import tenant
from app.web.current import services
from app.web.schemas import RunCreate


def flow_of(
    spec: RunCreate,
    key: str | None,
    fp: str | None,
    *,
    where: str = "",
    traceparent: str | None = None,
) -> flows.Node:
    """The run to make and its children (each with the request's `traceparent`): 422 naming
    the field when the tree has too many runs (one too deep the schema refuses:
    app.web.schemas makes one model per level)."""
    node = _node(spec, key, fp, traceparent)
    if size(node) > flows.MAX_RUNS:
        field = f"{where}children" if where else "children"
        raise errors.bad_fields([(field, f"a request makes at most {flows.MAX_RUNS} runs")])
    return node


def submitted_traceparent() -> str | None:
    """The trace a submit's runs join: with tracing on, the web's own span for the request (a
    child of its traceparent header when that is valid); off, the header itself if valid. A
    malformed header is ignored, as W3C Trace Context says."""
    if tracing.enabled():
        return tracing.current_traceparent()
    return tracing.parse_traceparent(request.headers.get("traceparent"))


def size(node: flows.Node) -> int:
    """How many runs the tree makes."""
    return 1 + sum(size(child) for child in node.children)


def _children(spec: RunCreate) -> list[RunCreate]:
    """The children given; none for a run at the deepest level, whose model has no field for
    them (app.web.schemas, _flow_levels)."""
    return getattr(spec, "children", None) or []


def _node(spec: RunCreate, key: str | None, fp: str | None, trace: str | None) -> flows.Node:
    children = tuple(_node(child, None, None, trace) for child in _children(spec))
    policy = getattr(spec, "on_child_failure", None) or "fail"
    return flows.Node(new_run(spec, key, fp, trace), children, policy)


def new_run(
    spec: RunCreate, key: str | None, fp: str | None, traceparent: str | None = None
) -> runs.NewRun:
    """The run to insert: the request's fields, else the task's defaults, else the contract's."""
    task = services().registry.tasks[spec.task]
    limit_key = spec.limit_key or _derived(task.limit_key_of, spec.input)
    dedupe = _dedupe(spec, task)
    start = _delayed_until(spec, dedupe)
    return runs.NewRun(
        tenant=tenant(),
        task=spec.task,
        queue=spec.queue or task.queue or "default",
        input=spec.input,
        priority=spec.priority,
        max_attempts=spec.max_attempts or task.max_attempts or 1,
        backoff=spec.backoff.model_dump() if spec.backoff else task.backoff,
        timeout_s=spec.timeout_s or task.timeout_s,
        metadata=spec.metadata,
        scheduled_for=start,
        delayed=start is not None,
        idempotency_key=key,
        request_fingerprint=fp,
        dedupe=dedupe,
        limit_key=limit_key,
        traceparent=traceparent,
    )


def _dedupe(spec: RunCreate, task: TaskDef) -> runs.Dedupe | None:
    """The request's dedupe field, else the key the task derives from the input (no TTL)."""
    if spec.dedupe is not None:
        return runs.Dedupe(spec.dedupe.key, spec.dedupe.ttl_s, spec.dedupe.debounce_ms)
    key = _derived(task.dedupe_key_of, spec.input)
    return runs.Dedupe(key) if key else None


def _derived(key_of: Callable[[Any], str | None], input: Any) -> str | None:
    """A key the task works out from the input; 422 on `input` when it cannot."""
    try:
        return key_of(input)
    except ValueError as exc:
        raise errors.bad_fields([("input", str(exc))]) from exc


def _delayed_until(spec: RunCreate, dedupe: runs.Dedupe | None) -> datetime | None:
    """When a delayed run may start; None to queue it now (no delay, or run_at already past).
    A debounced run waits its debounce_ms at least."""
    now = datetime.now(UTC)
    start = None
    if spec.delay_ms:
        start = now + timedelta(milliseconds=spec.delay_ms)
    elif spec.run_at is not None and spec.run_at > now:
        start = spec.run_at
    if dedupe is not None and dedupe.debounce_ms is not None:
        debounced = now + timedelta(milliseconds=dedupe.debounce_ms)
        start = max(start, debounced) if start else debounced
    return start
