"""Stopping attempts from outside: why (a timeout, a cancel's grace over, the worker's shutdown),
when (the watchdog thread) and how the stop reaches the task (a signal, or an exception posted to
its thread). The attempt's side, where a stop may land, is workers.context.Attempt.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

log = logging.getLogger("runlane.worker")

TICK_S = 0.05  # how late a stop may come; the watchdog also repeats an undelivered one this often
SHUTDOWN_GRACE_S = 4.0  # under honcho's 5 s between SIGTERM and SIGKILL
STOP_SIGNAL = signal.SIGUSR2

Handler = Callable[[int, FrameType | None], None]


class AttemptStopped(BaseException):
    """Raised inside a task to stop it; BaseException so that `except Exception` does not eat it."""


class AttemptTimedOut(AttemptStopped):
    """The attempt ran longer than its timeout_s: it fails (and is retried if attempts remain)."""


class AttemptCancelled(AttemptStopped):
    """A cancel was requested and the task did not end within the grace: the run is cancelled."""


class WorkerShutdown(AttemptStopped):
    """The worker is stopping: the attempt is handed back, no attempt spent."""


class Stoppable(Protocol):
    """What the watchdog and a delivery need of an attempt in flight."""

    timeout: float | None
    started_at: float | None  # monotonic, when the task was called
    cancel_noticed_at: float | None

    def request_stop(self, kind: type[AttemptStopped]) -> None: ...

    def interrupt(self) -> None:
        """Deliver the requested stop if the task's own code runs now (else a later tick does)."""

    def raise_from_signal(self) -> None:
        """In the stop signal's handler: raise the requested stop if it may land here."""


class Delivery(Protocol):
    """How a stop reaches the thread that runs a task."""

    def post(self, attempt: Stoppable, thread: int, stop: type[AttemptStopped]) -> bool:
        """Send `stop` to `thread`; True if it is now pending there, to be withdrawn if the task
        ends before it lands."""

    def withdraw(self, thread: int) -> None: ...

    def handlers(self) -> dict[int, Handler]:
        """The signal handlers it needs, for the worker to install in the main thread."""


class SignalDelivery:
    """A task in the main thread (concurrency 1 under `rq worker`): the stop is a signal, whose
    handler raises it in the task, even one blocked in a long C call (time.sleep, a socket read),
    which the signal interrupts."""

    def __init__(self) -> None:
        self._target: Stoppable | None = None

    def post(self, attempt: Stoppable, thread: int, stop: type[AttemptStopped]) -> bool:
        self._target = attempt
        signal.pthread_kill(thread, STOP_SIGNAL)
        return False  # the handler takes the stop itself, only where it may land

    def withdraw(self, thread: int) -> None:
        """Nothing is ever pending: a signal that comes late finds the task disarmed."""

    def handlers(self) -> dict[int, Handler]:
        return {STOP_SIGNAL: self._on_signal}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._target is not None:
            self._target.raise_from_signal()


class ThreadDelivery:
    """A task in a thread of its own, where signals never arrive: the stop is posted to it with
    PyThreadState_SetAsyncExc and raised when it next runs Python code, so a long C call is
    stopped only when it returns (README, Operations)."""

    def post(self, attempt: Stoppable, thread: int, stop: type[AttemptStopped]) -> bool:
        _async_raise(thread, stop)
        return True

    def withdraw(self, thread: int) -> None:
        _async_raise(thread, None)

    def handlers(self) -> dict[int, Handler]:
        return {}


def delivery_for(concurrency: int) -> Delivery:
    """Attempts run in the calling thread at concurrency 1: signals reach them there if it is the
    main thread. Anywhere else (threads, a worker embedded off the main thread), post to them."""
    if concurrency == 1 and threading.current_thread() is threading.main_thread():
        return SignalDelivery()
    return ThreadDelivery()


def _async_raise(thread_id: int, kind: type[BaseException] | None) -> None:
    """Raise `kind` in another thread at its next bytecode boundary (None: cancel a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(kind) if kind is not None else None
    )


class Shutdown:
    """The worker's stop request (SIGTERM, SIGINT, RQ's shutdown command). The first stops the
    popping and gives the attempts in flight SHUTDOWN_GRACE_S to finish; another, a second or more
    later, hands them back at once."""

    def __init__(self) -> None:
        self.requested = False
        self.deadline: float | None = None  # monotonic: attempts still running then are stopped
        self._signalled_at: float | None = None

    def request(self, signum: int) -> None:
        now = time.monotonic()
        if self._signalled_at is not None and now - self._signalled_at < 1.0:
            return  # the same stop sent twice (worker pool + terminal)
        warm = self._signalled_at is None
        self._signalled_at = now
        self.requested = True
        self.deadline = now + (SHUTDOWN_GRACE_S if warm else 0.0)
        log.info("worker.stop_requested", extra={"signal": signum, "warm": warm})


class Watchdog(threading.Thread):
    """Stops the attempts in flight whose time is up. It does no I/O, so that neither a Redis nor
    a Postgres outage delays a stop."""

    def __init__(
        self,
        in_flight: Callable[[], Sequence[Stoppable]],
        shutdown: Shutdown,
        cancel_grace_s: float,
    ) -> None:
        super().__init__(name="runlane-watchdog", daemon=True)
        self.in_flight = in_flight
        self.shutdown = shutdown
        self.cancel_grace_s = cancel_grace_s
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)

    def run(self) -> None:
        while not self._halt.wait(TICK_S):
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        for attempt in self.in_flight():
            kind = self.due(attempt, now)
            if kind is not None:
                attempt.request_stop(kind)
            attempt.interrupt()  # each tick: a stop waits out runlane's own calls in the task

    def due(self, attempt: Stoppable, now: float) -> type[AttemptStopped] | None:
        started = attempt.started_at
        if attempt.timeout and started is not None and now - started >= attempt.timeout:
            return AttemptTimedOut
        noticed = attempt.cancel_noticed_at
        if noticed is not None and now - noticed >= self.cancel_grace_s:
            return AttemptCancelled
        deadline = self.shutdown.deadline
        if deadline is not None and now >= deadline:
            return WorkerShutdown
        return None
