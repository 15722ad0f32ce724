"""Tasks that only the tests register (RUNLANE_TASK_MODULES=tests.tasks)."""

from __future__ import annotations

import time
from typing import Any

from app.tasks import Context, task


@task("tests.stubborn")
def stubborn(ctx: Context, input: Any) -> dict[str, Any]:
    """Sleeps `seconds` and ignores cancellation: only a hard stop ends it early."""
    deadline = time.monotonic() + float(input.get("seconds", 30))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"ignored": True}


@task("tests.chatty")
def chatty(ctx: Context, input: Any) -> dict[str, Any]:
    """Logs a line and reports progress, then returns what the context said about itself."""
    ctx.log("hello", "warning")
    ctx.progress(50, "half")
    return {"run_id": ctx.run_id, "attempt": ctx.attempt, "cancelled": ctx.cancel_requested}


@task("tests.unserializable")
def unserializable(ctx: Context, input: Any) -> Any:
    """Returns something JSON cannot hold."""
    return {"when": object()}


@task("tests.reporter")
def reporter(ctx: Context, input: Any) -> dict[str, Any]:
    """Reports progress without pause for `seconds`: stops must land between its reports."""
    deadline = time.monotonic() + float(input.get("seconds", 30))
    count = 0
    while time.monotonic() < deadline:
        count += 1
        ctx.progress(count % 100, f"report {count}")
    return {"reports": count}


@task("tests.blocked")
def blocked(ctx: Context, input: Any) -> dict[str, Any]:
    """One long C call (time.sleep of `seconds`): at concurrency 1 a signal still ends it early."""
    time.sleep(float(input.get("seconds", 30)))
    return {"blocked": True}


@task("tests.traced")
def traced(ctx: Context, input: Any) -> dict[str, Any]:
    """Opens a span of its own (when `span` is asked for), as a task using OpenTelemetry does,
    and logs a line; returns the trace id its context gave it."""
    import logging

    logging.getLogger("tests.traced").warning("traced.working")
    if input and input.get("span"):
        from opentelemetry import trace

        with trace.get_tracer("tests.tasks").start_as_current_span("tests.traced.work") as span:
            span.set_attribute("tests.input", str(input.get("tag", "")))
    return {"trace_id": ctx.trace_id}
