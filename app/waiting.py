"""Why a run is not running (contract §5.2), worked out whenever a run is shown, never stored: it
changes with time and with other runs, and writing it down would mean an update (and an event)
each time it did.

What it needs beyond the run's row: whether its queue is paused for its tenant (the row's
`queue_paused`, which the queries that show runs select with it) and which queues live workers
serve (ServedQueues, from their heartbeats in Redis).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container
from datetime import datetime
from typing import Any

from redis import Redis

from app.domain import Run, RunStatus, rfc3339
from app.live_workers import live_workers
from app.redis_keys import Keys
from app.services import REDIS_DOWN

WAITS = (RunStatus.WAITING, RunStatus.QUEUED, RunStatus.DELAYED)
# what a run a queue limit holds back (its `held`, app.limits) waits for
HELD = {
    "concurrency_limited": "queue {queue} runs as many at once as its limits allow",
    "key_concurrency_limited": "its limit_key runs as many at once as queue {queue} allows",
    "rate_limited": "queue {queue} started as many as its rate allows; the next may at until",
    "key_rate_limited": "its limit_key started as many as queue {queue}'s rate allows",
    "queued": "waiting its turn behind runs the limits of queue {queue} hold back",
}


def waiting_of(run: Run, served: Container[str] | None) -> dict[str, Any] | None:
    """{reason, detail, until} while the run waits, else None; `served` is None when it is not
    known which queues have workers (Redis away), and then no_workers is never claimed."""
    if run.status not in WAITS:
        return None
    if run.status is RunStatus.WAITING:
        left, total = run.children_pending, run.children_total
        return _reason("children", f"waiting for {left} of its {total} children to end")
    if run.status is RunStatus.DELAYED:
        if run.attempt > run.attempt_base:  # an attempt of this budget failed: a retry's wait
            return _reason(
                "backoff", f"attempt {run.attempt} failed; retried then", run.scheduled_for
            )
        return _reason("delayed", "starts no sooner than until", run.scheduled_for)
    if run.queue_paused:
        return _reason("paused", f"queue {run.queue} is paused")
    if run.held in HELD:
        return _reason(run.held, HELD[run.held].format(queue=run.queue), run.held_until)
    if served is not None and run.queue not in served:
        return _reason("no_workers", f"no live worker serves queue {run.queue}")
    return _reason("queued", "waiting its turn")


def shown(run: Run, served: Container[str] | None) -> dict[str, Any]:
    """The run as clients see it, `waiting` filled in (it is the record's last API field, so
    setting it keeps the contract's order)."""
    found = run.to_json()
    found["waiting"] = waiting_of(run, served)
    return found


def _reason(reason: str, detail: str, until: datetime | None = None) -> dict[str, Any]:
    return {"reason": reason, "detail": detail, "until": rfc3339(until)}


class ServedQueues:
    """The runlane queues live workers serve, read from Redis at most once a second per process:
    every run shown needs it, and a worker that just started or died is seen within a second
    either way (its heartbeat lags by more)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.keys, self.ttl_s, self.clock = redis, keys, ttl_s, clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._queues: frozenset[str] | None = None

    def get(self) -> frozenset[str] | None:
        """The queues, or None while Redis cannot say. One thread refreshes them while the
        others go on with what was read last, so a slow or unreachable Redis holds up one
        request a second, not all of them."""
        if self.clock() - self._read_at < self.ttl_s or not self._lock.acquire(blocking=False):
            return self._queues
        try:
            try:
                workers = live_workers(self.redis, self.keys)
                self._queues = frozenset(q for w in workers for q in w.queues)
            except REDIS_DOWN:
                self._queues = None
            self._read_at = self.clock()
            return self._queues
        finally:
            self._lock.release()
