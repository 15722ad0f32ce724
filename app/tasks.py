"""The task registry: tasks are functions registered by name with a decorator.

It lives in the shared core because both sides need it: the web validates task names and shows
their defaults, the workers call them. Task modules are imported by name (RUNLANE_TASK_MODULES).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Unrecoverable(Exception):
    """Raised by a task to fail its run at once, whatever attempts remain."""


class Context(Protocol):
    """What a task is handed besides its input."""

    run_id: str
    attempt: int
    # a flow parent's children, in the order given (contract §5.4): {id, task, status, result,
    # error}; empty for a run without children
    children: list[dict[str, Any]]
    # the run's trace (32 hex digits): its submit's traceparent, or the attempt's span while
    # tracing is on; None when there is none
    trace_id: str | None

    def progress(self, percent: float, message: str = "") -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...

    @property
    def cancel_requested(self) -> bool: ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True early (within 100 ms) if cancellation is requested."""
        ...


TaskFn = Callable[[Context, Any], Any]


@dataclass(frozen=True)
class TaskDef:
    name: str
    fn: TaskFn
    queue: str | None = None
    max_attempts: int | None = None
    backoff: dict[str, Any] | None = None
    timeout_s: float | None = None
    description: str = ""
    # the run's limit key and dedupe key when the submit gives none (contract §5.1, §5.3),
    # worked out from the run's input
    limit_key: Callable[[Any], str | None] | None = None
    dedupe_key: Callable[[Any], str | None] | None = None

    def limit_key_of(self, input: Any) -> str | None:
        """The limit key the task derives from `input`; ValueError when that fails."""
        return _key_of(self.limit_key, input, "limit_key")

    def dedupe_key_of(self, input: Any) -> str | None:
        """The dedupe key the task derives from `input`; ValueError when that fails."""
        return _key_of(self.dedupe_key, input, "dedupe_key")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue or "default",
            "max_attempts": self.max_attempts or 1,
            "backoff": self.backoff,
            "timeout_s": self.timeout_s,
            "description": self.description,
        }


@dataclass
class Registry:
    tasks: dict[str, TaskDef] = field(default_factory=dict)

    def task(
        self,
        name: str,
        *,
        queue: str | None = None,
        max_attempts: int | None = None,
        backoff: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        limit_key: Callable[[Any], str | None] | None = None,
        dedupe_key: Callable[[Any], str | None] | None = None,
    ) -> Callable[[TaskFn], TaskFn]:
        def register(fn: TaskFn) -> TaskFn:
            if name in self.tasks and self.tasks[name].fn is not fn:
                raise ValueError(f"task {name} is registered twice")
            doc = (fn.__doc__ or "").strip().splitlines()
            summary = doc[0] if doc else ""
            self.tasks[name] = TaskDef(
                name, fn, queue, max_attempts, backoff, timeout_s, summary, limit_key, dedupe_key
            )
            return fn

        return register

    def get(self, name: str) -> TaskDef | None:
        return self.tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.tasks


def _key_of(derive: Callable[[Any], str | None] | None, input: Any, what: str) -> str | None:
    if derive is None:
        return None
    try:
        key = derive(input)
    except Exception as exc:
        raise ValueError(f"the task's {what} failed on this input: {exc!r}") from exc
    if key is not None and not (isinstance(key, str) and 1 <= len(key) <= 255):
        raise ValueError(f"the task's {what} must give a string of 1 to 255 characters")
    return key


# The registry task modules register into with `@task(...)`; filled when they are imported.
registry = Registry()
task = registry.task

ALWAYS_LOADED = ("app.demo",)


def load(modules: Iterable[str]) -> Registry:
    """Import the task modules (the demo tasks always); their decorators fill the registry."""
    for module in dict.fromkeys([*ALWAYS_LOADED, *modules]):
        importlib.import_module(module)
    return registry
