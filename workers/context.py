"""An attempt in flight: what the task sees (its context) and how it is stopped from outside.

The worker's monitor thread decides that an attempt must stop (cancel grace over, worker shutdown)
and a timer decides it timed out; the stop is raised in the main thread, but only while the task's
own code runs: never inside runlane's own database calls, which would break the connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.domain import Run


class AttemptStopped(BaseException):
    """Raised inside a task to stop it; BaseException so that `except Exception` does not eat it."""

    reason = "stopped"


class AttemptTimedOut(AttemptStopped):
    reason = "timeout"


class AttemptCancelled(AttemptStopped):
    reason = "cancelled"


class WorkerShutdown(AttemptStopped):
    reason = "shutdown"


Report = Callable[[Run, str, dict[str, Any]], bool]


class Attempt:
    """One claimed attempt; shared between the main thread and the monitor thread."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.cancel = threading.Event()
        self.cancel_noticed_at: float | None = None
        self.started_at: float | None = None  # monotonic, when the task was called
        self.stop: type[AttemptStopped] | None = None
        self._armed = False  # the task's own code is running and may be interrupted
        self._shield = 0

    def notice_cancel(self) -> None:
        if not self.cancel.is_set():
            self.cancel_noticed_at = time.monotonic()
            self.cancel.set()

    def request_stop(self, kind: type[AttemptStopped]) -> None:
        if self.stop is None:
            self.stop = kind

    def raise_if_stopped(self) -> None:
        """Called by the stop-signal handler in the main thread, and when a shield ends."""
        if self.stop is not None and self._armed and not self._shield:
            self._armed = False
            raise self.stop()

    @contextmanager
    def running_task(self) -> Iterator[None]:
        self.started_at = time.monotonic()
        self._armed = True
        try:
            self.raise_if_stopped()
            yield
        finally:
            self._armed = False

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Runlane's own I/O on the task's behalf: stops wait until it is done."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        self.raise_if_stopped()


class AttemptContext:
    """The context a task gets (app.tasks.Context)."""

    def __init__(self, attempt: Attempt, report: Report) -> None:
        self._attempt = attempt
        self._report = report  # writes a run.progress / run.log event; returns cancel requested
        self.run_id = attempt.run.id
        self.attempt = attempt.run.attempt

    def progress(self, percent: float, message: str = "") -> None:
        percent = min(100.0, max(0.0, float(percent)))
        data = {"percent": int(percent) if percent.is_integer() else percent, "message": message}
        self._write("progress", data)

    def log(self, message: str, level: str = "info") -> None:
        self._write("log", {"message": str(message), "level": str(level)})

    @property
    def cancel_requested(self) -> bool:
        return self._attempt.cancel.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True at once when cancellation is requested."""
        return self._attempt.cancel.wait(max(0.0, seconds))

    def _write(self, kind: str, data: dict[str, Any]) -> None:
        with self._attempt.shielded():
            if self._report(self._attempt.run, kind, data):
                self._attempt.notice_cancel()
