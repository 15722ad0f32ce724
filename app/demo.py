"""The built-in demo tasks of contract §3, always registered."""

from __future__ import annotations

from typing import Any

from app.tasks import Context, Unrecoverable, task


class DemoFailure(Exception):
    """What demo.fail raises on its failing attempts."""


@task("demo.echo")
def echo(ctx: Context, input: Any) -> Any:
    """Returns its input."""
    return input


@task("demo.noop")
def noop(ctx: Context, input: Any) -> None:
    """Does nothing."""
    return None


@task("demo.sleep")
def sleep(ctx: Context, input: Any) -> dict[str, Any]:
    """Sleeps `seconds`, stopping early (within 100 ms) when cancellation is requested."""
    seconds = _number(input, "seconds", 1.0)
    ctx.wait(seconds)
    return {"slept": seconds}


@task("demo.progress")
def progress(ctx: Context, input: Any) -> dict[str, Any]:
    """Reports `steps` progress events `interval_ms` apart."""
    steps = int(_number(input, "steps", 10))
    interval = _number(input, "interval_ms", 100) / 1000.0
    for i in range(1, steps + 1):
        if i > 1 and ctx.wait(interval):
            break
        ctx.progress(round(100 * i / steps), f"step {i}/{steps}")
    return {"steps": steps}


@task("demo.fail")
def fail(ctx: Context, input: Any) -> dict[str, Any]:
    """Attempts 1..`times` raise (Unrecoverable when `unrecoverable` is true)."""
    times = int(_number(input, "times", 1))
    if ctx.attempt <= times:
        message = f"attempt {ctx.attempt} of {times} failing attempts"
        if isinstance(input, dict) and input.get("unrecoverable"):
            raise Unrecoverable(message)
        raise DemoFailure(message)
    return {"attempt": ctx.attempt}


@task("demo.collect")
def collect(ctx: Context, input: Any) -> dict[str, Any]:
    """A flow's parent: returns what its children returned, in order."""
    keep = ("id", "task", "status", "result")
    return {"children": [{name: child[name] for name in keep} for child in ctx.children]}


def _number(input: Any, name: str, default: float) -> float:
    value = input.get(name, default) if isinstance(input, dict) else default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unrecoverable(f"input.{name} must be a number")
    return max(0.0, float(value))
