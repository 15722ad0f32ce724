"""The monitor thread of a worker process: leases, cancel requests and RQ's heartbeat.

It keeps the Postgres leases of the attempts in hand alive (so a slow but alive attempt is never
declared stalled) and notices cancel requests: a cheap Redis EXISTS every 0.2 s for each attempt in
flight, in one round trip; the lease renewal reports them too, so a lost Redis key still cancels.
Stopping an attempt whose cancel grace is over is the watchdog's (workers.stopping).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from app import attempts
from app.logs import Outage
from app.services import Services, redis_outage
from workers.context import Attempt
from workers.execute import Executor

log = logging.getLogger("runlane.monitor")

TICK_S = 0.05
CANCEL_POLL_S = 0.2
HEARTBEAT_S = 5.0


class Monitor(threading.Thread):
    def __init__(
        self, executor: Executor, services: Services, heartbeat: Callable[[], None]
    ) -> None:
        super().__init__(name="runlane-monitor", daemon=True)
        self.executor = executor
        self.services = services
        self.heartbeat = heartbeat  # RQ's worker heartbeat, so `rq info` keeps seeing us
        self._halt = threading.Event()
        self._next_cancel_poll = 0.0
        self._next_lease = 0.0
        self._next_heartbeat = 0.0
        self._redis_outage = Outage(log, "monitor.redis")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)

    def run(self) -> None:
        while not self._halt.wait(TICK_S):
            try:
                self.tick(time.monotonic())
            except Exception:  # a Redis or Postgres hiccup must not kill the monitor
                log.exception("monitor.tick_failed")
                self._halt.wait(0.5)

    def tick(self, now: float) -> None:
        # Leases first and in Postgres alone: while Redis is away, attempts must stay leased.
        if now >= self._next_lease:
            self._next_lease = now + self.services.settings.heartbeat_seconds
            self._renew_leases()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            self._tolerating_redis(self.heartbeat)
        running = self.executor.in_flight()
        if running and now >= self._next_cancel_poll:
            self._next_cancel_poll = now + CANCEL_POLL_S
            self._tolerating_redis(lambda: self._poll_cancels(running))

    def _tolerating_redis(self, step: Callable[[], None]) -> None:
        """A Redis step (cancel keys, RQ's heartbeat) that an outage must not turn into missed
        lease renewals; the lease renewal reports cancels meanwhile."""
        try:
            step()
        except RedisError as exc:
            if not redis_outage(exc):
                raise
            self._redis_outage.down(exc)
            return
        self._redis_outage.up()

    def _poll_cancels(self, running: list[Attempt]) -> None:
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

    def _renew_leases(self) -> None:
        in_hand = dict(self.executor.in_hand)
        if not in_hand:
            return
        settings = self.services.settings
        with self.services.pool.connection() as conn:
            cancels = attempts.renew_leases(
                conn, list(in_hand), worker=self.executor.worker, lease_s=settings.lease_seconds
            )
        for run_id, cancel_requested in cancels.items():
            if cancel_requested and run_id in in_hand:
                in_hand[run_id].notice_cancel()


def cancel_key(services: Services, attempt: Attempt) -> str:
    """The cancel flag of this very attempt: one left for an earlier attempt of the run (a cancel
    that arrived late) never stops it."""
    return services.keys.cancel(attempt.run.id, attempt.run.attempt)
