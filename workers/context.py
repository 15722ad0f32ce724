"""An attempt in flight: what the task sees (its context) and how it is stopped from outside.

The worker's monitor thread decides that an attempt must stop (cancel grace over, worker shutdown)
and a timer decides it timed out; the stop is raised in the main thread (or, with concurrency,
in the task's thread), but only while the task's own code runs: never inside runlane's own
database calls, which would break the connection.
"""

from __future__ import annotations

import ctypes
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
LOG_LEVELS = ("debug", "info", "warning", "error")  # the levels of run.log events (contract §2)


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

    def wait(self, seconds: float) -> bool:
        """The task's ctx.wait: True at once when cancellation is requested."""
        return self.cancel.wait(max(0.0, seconds))


class ThreadedAttempt(Attempt):
    """An attempt run in a worker thread, where signals never arrive: the monitor raises its stop
    in that thread with PyThreadState_SetAsyncExc, at most once per arming, and only while the
    task's own code runs. A task waiting in ctx.wait is woken and raises the stop itself."""

    def __init__(self, run: Run) -> None:
        super().__init__(run)
        self.timeout: float | None = None  # the monitor stops the attempt this long after start
        self._lock = threading.Lock()  # orders arming, shields and posting against each other
        self._nudge = threading.Event()  # wakes ctx.wait for a cancel or a stop
        self._thread: int | None = None
        self._waiting = False
        self._posted = False  # an asynchronous stop may be pending in the thread

    def notice_cancel(self) -> None:
        with self._lock:
            super().notice_cancel()
            self._nudge.set()

    def interrupt(self) -> None:
        """From the monitor: deliver the requested stop to the task's thread."""
        with self._lock:
            if self.stop is None or not self._armed or self._shield or self._thread is None:
                return
            if self._waiting:
                self._nudge.set()  # the thread raises it as it returns from ctx.wait
                return
            self._armed = False  # one exception per arming: it can only land where we allow
            self._posted = True
            _async_raise(self._thread, self.stop)

    def running_task(self) -> _Running:  # type: ignore[override]
        return _Running(self)

    @contextmanager
    def shielded(self) -> Iterator[None]:
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
                _async_raise(self._thread, None)  # not raised yet: the task is over, drop it
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
    """ThreadedAttempt.running_task: a plain class, so that its exit cannot be skipped the way a
    generator's can when an exception lands in contextlib's own code."""

    def __init__(self, attempt: ThreadedAttempt) -> None:
        self.attempt = attempt

    def __enter__(self) -> None:
        self.attempt._arm()

    def __exit__(self, *exc: object) -> None:
        self.attempt._disarm()


def _async_raise(thread_id: int, kind: type[BaseException] | None) -> None:
    """Raise `kind` in another thread at its next bytecode boundary (None: cancel a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(kind) if kind is not None else None
    )


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
