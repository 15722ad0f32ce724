"""An attempt in flight: what the task sees (its context) and where a stop may land in it.

The watchdog (workers.stopping) decides that an attempt must stop and delivers the stop to the
task's thread; it lands only while the task's own code runs, never inside runlane's own database
calls on the task's behalf, which would break the connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.domain import Run
from workers.stopping import AttemptStopped, Delivery

Report = Callable[[Run, str, dict[str, Any]], bool]
LOG_LEVELS = ("debug", "info", "warning", "error")  # the levels of run.log events (contract §2)


class Attempt:
    """One claimed attempt, shared by the thread running its task, the monitor (cancel notices)
    and the watchdog (stops). A stop is delivered at most once per arming, and only while the
    task's own code runs; a task waiting in ctx.wait is woken and raises the stop itself."""

    def __init__(self, run: Run, delivery: Delivery) -> None:
        self.run = run
        self.cancel = threading.Event()
        self.cancel_noticed_at: float | None = None
        self.started_at: float | None = None  # monotonic, when the task was called
        self.timeout: float | None = None  # the watchdog stops the attempt this long after start
        self.stop: type[AttemptStopped] | None = None
        self._delivery = delivery
        self._lock = threading.Lock()  # orders arming, shields and delivery against each other
        self._nudge = threading.Event()  # wakes ctx.wait for a cancel or a stop
        self._thread: int | None = None
        self._armed = False  # the task's own code is running and may be interrupted
        self._shield = 0
        self._waiting = False
        self._posted = False  # an asynchronous stop may be pending in the thread

    def notice_cancel(self) -> None:
        with self._lock:
            if not self.cancel.is_set():
                self.cancel_noticed_at = time.monotonic()
                self.cancel.set()
            self._nudge.set()

    def request_stop(self, kind: type[AttemptStopped]) -> None:
        if self.stop is None:
            self.stop = kind

    def interrupt(self) -> None:
        """From the watchdog: deliver the requested stop to the task's thread."""
        with self._lock:
            if self.stop is None or not self._armed or self._shield or self._thread is None:
                return
            if self._waiting:
                self._nudge.set()  # the thread raises it as it returns from ctx.wait
                return
            if self._delivery.post(self, self._thread, self.stop):
                self._armed = False  # one exception per arming: it can only land where we allow
                self._posted = True

    def raise_from_signal(self) -> None:
        """The stop signal's handler, in the thread it interrupted. A lock held here means the
        task is in a step of ours (or another thread has it): the next tick signals again."""
        if self._thread != threading.get_ident() or not self._lock.acquire(blocking=False):
            return
        try:
            stop = self._take_stop()
        finally:
            self._lock.release()
        if stop is not None:
            raise stop()

    def running_task(self) -> _Running:
        return _Running(self)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Runlane's own I/O on the task's behalf: stops wait until it is done."""
        entered = False
        try:
            with self._lock:
                self._shield += 1
                entered = True
            # a stop posted before the shield went up has been raised by now, at the latest as
            # the lock was released: none can land in what follows
            yield
        finally:
            stop = None
            if entered:
                with self._lock:
                    self._shield -= 1
                    stop = self._take_stop()
        if stop is not None:
            raise stop()

    def wait(self, seconds: float) -> bool:
        """The task's ctx.wait: True at once when cancellation is requested."""
        if self.cancel.is_set():
            return True
        with self._lock:
            self._waiting = True
        try:
            self._nudge.wait(max(0.0, seconds))
        finally:
            with self._lock:
                self._waiting = False
                stop = self._take_stop()
        if stop is not None:
            raise stop()
        return self.cancel.is_set()

    def _arm(self) -> None:
        with self._lock:
            self._thread = threading.get_ident()
            self.started_at = time.monotonic()
            self._armed = True
            stop = self._take_stop()
        if stop is not None:
            raise stop()

    def _disarm(self) -> None:
        with self._lock:
            self._armed = False
            if self._posted and self._thread is not None:
                self._delivery.withdraw(self._thread)  # not raised yet: the task is over
            self._posted = False

    def _take_stop(self) -> type[AttemptStopped] | None:
        """The stop to raise now, synchronously, in the task's thread (lock held)."""
        if self.stop is None or not self._armed or self._shield:
            return None
        self._armed = False
        if not self.cancel.is_set():
            self._nudge.clear()  # a task that swallows the stop must not spin in ctx.wait
        return self.stop


class _Running:
    """Attempt.running_task: a plain class, so that its exit cannot be skipped the way a
    generator's can when an exception lands in contextlib's own code."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def __enter__(self) -> None:
        self.attempt._arm()

    def __exit__(self, *exc: object) -> None:
        self.attempt._disarm()


class AttemptContext:
    """The context a task gets (app.tasks.Context)."""

    def __init__(
        self,
        attempt: Attempt,
        report: Report,
        children: list[dict[str, Any]] | None = None,
        trace_id: str | None = None,
    ) -> None:
        self._attempt = attempt
        self._report = report  # writes a run.progress / run.log event; returns cancel requested
        self.run_id = attempt.run.id
        self.attempt = attempt.run.attempt
        # a flow parent's children, in the order given: {id, task, status, result, error}
        self.children = children or []
        self.trace_id = trace_id  # the run's trace, if it has one (app.tasks.Context)

    def progress(self, percent: float, message: str = "") -> None:
        percent = min(100.0, max(0.0, float(percent)))
        data = {"percent": int(percent) if percent.is_integer() else percent, "message": message}
        self._write("progress", data)

    def log(self, message: str, level: str = "info") -> None:
        if level not in LOG_LEVELS:  # refused before anything is written, so clients see only these
            allowed = ", ".join(LOG_LEVELS)
            raise ValueError(f"ctx.log level must be one of {allowed}; got {level!r}")
        self._write("log", {"message": str(message), "level": level})

    @property
    def cancel_requested(self) -> bool:
        return self._attempt.cancel.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True at once when cancellation is requested."""
        return self._attempt.wait(seconds)

    def _write(self, kind: str, data: dict[str, Any]) -> None:
        with self._attempt.shielded():
            if self._report(self._attempt.run, kind, data):
                self._attempt.notice_cancel()
