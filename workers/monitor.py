"""The watchdog thread of a worker process: leases, cancel requests and hard stops.

It keeps the Postgres leases of the attempts in hand alive (so a slow but alive attempt is never
declared stalled), notices cancel requests (a cheap Redis EXISTS every 0.2 s for each attempt in
flight; the lease renewal reports them too, so a lost Redis key still cancels), and stops an
attempt hard when its cancel grace or the worker's shutdown grace is over (or, for attempts in
threads, its timeout).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from app import runs
from app.logs import Outage
from app.services import REDIS_DOWN, Services
from workers.context import (
    Attempt,
    AttemptCancelled,
    AttemptTimedOut,
    ThreadedAttempt,
    WorkerShutdown,
)
from workers.execute import Executor, ThreadedExecutor

log = logging.getLogger("runlane.monitor")

TICK_S = 0.05
CANCEL_POLL_S = 0.2
STOP_SIGNAL = signal.SIGUSR2


class Monitor(threading.Thread):
    def __init__(
        self, executor: Executor, services: Services, heartbeat: Callable[[], None]
    ) -> None:
        super().__init__(name="runlane-monitor", daemon=True)
        self.executor = executor
        self.services = services
        self.heartbeat = heartbeat  # RQ's worker heartbeat, so `rq info` keeps seeing us
        self.shutdown_deadline: float | None = None
        self._halt = threading.Event()
        self._next_cancel_poll = 0.0
        self._next_lease = 0.0
        self._next_heartbeat = 0.0
        self._main = threading.main_thread().ident
        self._redis_outage = Outage(log, "monitor.redis")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)

    def run(self) -> None:
        while not self._halt.wait(TICK_S):
            try:
                self.tick(time.monotonic())
            except Exception:  # a Redis or Postgres hiccup must not kill the watchdog
                log.exception("monitor.tick_failed")
                self._halt.wait(0.5)

    def tick(self, now: float) -> None:
        attempt = self.executor.current
        self._keep_alive(now)
        if attempt is not None and now >= self._next_cancel_poll:
            self._next_cancel_poll = now + CANCEL_POLL_S
            self._tolerating_redis(lambda: self._poll_cancel(attempt))
        if attempt is not None:
            self._hard_stop(attempt, now)

    def _keep_alive(self, now: float) -> None:
        # Leases first and in Postgres alone: while Redis is away, attempts must stay leased.
        if now >= self._next_lease:
            self._next_lease = now + self.services.settings.heartbeat_seconds
            self._renew_leases()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + 5.0
            self._tolerating_redis(self.heartbeat)

    def _tolerating_redis(self, step: Callable[[], None]) -> None:
        """A Redis step (cancel keys, RQ's heartbeat) that an outage must not turn into missed
        lease renewals or hard stops; the lease renewal reports cancels meanwhile."""
        try:
            step()
        except REDIS_DOWN as exc:
            self._redis_outage.down(exc)
            return
        self._redis_outage.up()

    def _poll_cancel(self, attempt: Attempt) -> None:
        if attempt.cancel.is_set():
            return
        if self.services.redis.exists(cancel_key(self.services, attempt)):
            attempt.notice_cancel()

    def _renew_leases(self) -> None:
        in_hand = dict(self.executor.in_hand)
        if not in_hand:
            return
        settings = self.services.settings
        with self.services.pool.connection() as conn:
            cancels = runs.renew_leases(
                conn, list(in_hand), worker=self.executor.worker, lease_s=settings.lease_seconds
            )
        for run_id, cancel_requested in cancels.items():
            if cancel_requested and run_id in in_hand:
                in_hand[run_id].notice_cancel()

    def _hard_stop(self, attempt: Attempt, now: float) -> None:
        grace = self.services.settings.cancel_grace_seconds
        noticed = attempt.cancel_noticed_at
        if noticed is not None and now - noticed >= grace:
            attempt.request_stop(AttemptCancelled)
        if self.shutdown_deadline is not None and now >= self.shutdown_deadline:
            attempt.request_stop(WorkerShutdown)
        if attempt.stop is not None and self.executor.signals and self._main is not None:
            # repeated each tick: a task that swallows the stop gets it again
            signal.pthread_kill(self._main, STOP_SIGNAL)


class ThreadedMonitor(Monitor):
    """The monitor of a worker running attempts in threads: it watches every attempt in flight,
    polls their cancel keys in one round trip, and raises timeouts and hard stops in their
    threads (signals only ever reach the main thread)."""

    executor: ThreadedExecutor

    def tick(self, now: float) -> None:
        running = list(self.executor.running.values())
        self._keep_alive(now)
        if running and now >= self._next_cancel_poll:
            self._next_cancel_poll = now + CANCEL_POLL_S
            self._tolerating_redis(lambda: self._poll_cancels(running))
        for attempt in running:
            started = attempt.started_at
            if attempt.timeout and started is not None and now - started >= attempt.timeout:
                attempt.request_stop(AttemptTimedOut)
            self._hard_stop(attempt, now)
            attempt.interrupt()  # repeated each tick: it waits out the task's shielded calls

    def _poll_cancels(self, running: list[ThreadedAttempt]) -> None:
        watched = [a for a in running if not a.cancel.is_set()]
        if not watched:
            return
        with self.services.redis.pipeline(transaction=False) as pipe:
            for attempt in watched:
                pipe.exists(cancel_key(self.services, attempt))
            found = pipe.execute()
        for attempt, exists in zip(watched, found, strict=True):
            if exists:
                attempt.notice_cancel()


def cancel_key(services: Services, attempt: Attempt) -> str:
    """The cancel flag of this very attempt: one left for an earlier attempt of the run (a cancel
    that arrived late) never stops it."""
    return services.keys.cancel(attempt.run.id, attempt.run.attempt)
