"""The scheduler process: everything time-driven that moves runs toward a worker.

Due delayed runs are queued and enqueued; queued runs Redis may have lost are dispatched again
(quickly and all at once when Redis was emptied); stalled attempts are recovered; cron / every_s
schedules fire; finished runs past retention are deleted. Any number may run at once: each step
is guarded in Postgres (SKIP LOCKED, guarded updates, the idempotency key of a firing), and a
duplicate delivery to RQ is a no-op at the worker's claim.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app import attempts, dispatch, flows, limits, runs
from app.config import Settings
from app.db import q
from app.domain import Run, RunStatus, rfc3339
from app.observability import metrics, tracing
from app.observability.metrics import SchedulerMetrics
from app.runs import Conn, NewRun
from app.schedules import next_fire_at
from app.services import Services, primary_lost

log = logging.getLogger("runlane.scheduler")

MAX_SLEEP_S = 0.2
STALL_EVERY_S = 1.0
SWEEP_EVERY_S = 2.0
SWEEP_OLDER_THAN_S = 5.0  # a run dispatched this long ago and still queued may be lost
RETENTION_EVERY_S = 60.0


def main(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    services = Services.build(settings, pool_size=2, name="runlane-scheduler")
    tracing.setup(settings, "runlane-scheduler")
    registry = metrics.registry_for(settings)
    server = metrics.serve(settings, registry)
    scheduler = Scheduler(services, SchedulerMetrics(registry))
    log.info("scheduler.started")
    try:
        while not stop.is_set():
            stop.wait(scheduler.tick())
    finally:
        services.close()
        if server is not None:
            server.close()
        tracing.shutdown()
        log.info("scheduler.stopped")


class Scheduler:
    def __init__(self, services: Services, metrics: SchedulerMetrics | None = None) -> None:
        self.services = services
        self.metrics = metrics
        self.keys = services.keys
        self._due: dict[str, float] = {}

    def tick(self) -> float:
        """One pass over whatever is due; returns how long to sleep."""
        try:
            with self.services.pool.connection() as conn:
                self._every("sentinel", 0, lambda: self.check_sentinel(conn))
                self.promote(conn)
                self.release_held(conn)
                self._every("stalls", STALL_EVERY_S, lambda: self.recover_stalled(conn))
                self._every("sweep", SWEEP_EVERY_S, lambda: self.sweep(conn))
                self.fire_schedules(conn)
                self._every("retention", RETENTION_EVERY_S, lambda: self.retention(conn))
                return self._sleep(conn)
        except Exception as exc:  # a database or Redis outage: keep trying
            log.exception("scheduler.tick_failed")
            if primary_lost(exc):  # the address leads to a replica now: connect afresh
                self.services.redis.connection_pool.disconnect()
            return 1.0

    def _every(self, name: str, period: float, step: Callable[[], Any]) -> None:
        now = time.monotonic()
        if now >= self._due.get(name, 0.0):
            self._due[name] = now + period
            step()

    def _sleep(self, conn: Conn) -> float:
        """Until the next delayed run or schedule is due, at most MAX_SLEEP_S."""
        row = conn.execute(q("next_schedule_due")).fetchone()
        next_due = (runs.next_delayed_due(conn), row and row["due"], limits.next_release_due(conn))
        dues = [due for due in next_due if due]
        if not dues:
            return MAX_SLEEP_S
        left = (min(dues) - datetime.now(UTC)).total_seconds()
        return min(MAX_SLEEP_S, max(0.005, left))

    def enqueue(self, batch: list[Run]) -> None:
        """Dispatch the queued runs of a batch of committed state changes (which wakes the
        relay), or only wake the relay when none is queued (a run failed by a second stall)."""
        queued = [run for run in batch if run.status is RunStatus.QUEUED]
        if queued:
            dispatch.enqueue(self.services.redis, self.keys, queued)
        elif batch:
            self.services.nudge_relay()

    # -- the steps ------------------------------------------------------------------------

    def promote(self, conn: Conn) -> None:
        while promoted := runs.promote_due(conn):
            self.enqueue(promoted)
            log.debug("scheduler.promoted", extra={"count": len(promoted)})
            if len(promoted) < 500:
                break

    def recover_stalled(self, conn: Conn) -> None:
        recovered, released = attempts.recover_stalled(conn)
        for run in recovered:
            log.warning("run.stalled", extra={"run_id": run.id, "status": run.status.value})
        if self.metrics is not None:
            self.metrics.stalled(recovered)
        self.enqueue(recovered + released)
        cancelled = flows.after_change(conn, self.services.redis, self.keys, recovered)
        if self.metrics is not None:
            self.metrics.finished(cancelled)

    def release_held(self, conn: Conn) -> None:
        """Runs held back by a rate limit whose window has reopened."""
        self.enqueue(limits.release_due(conn))

    def check_sentinel(self, conn: Conn) -> None:
        """Redis emptied (restart without persistence, FLUSHALL): every queued run again, now."""
        redis = self.services.redis
        if redis.exists(self.keys.dispatch_sentinel):
            return
        lost = runs.queued_to_dispatch(conn, older_than_s=0, limit=100_000)
        self.enqueue(lost)
        if self.metrics is not None:
            self.metrics.redispatched(lost)
        runs.mark_dispatched(conn, [run.id for run in lost])
        redis.set(self.keys.dispatch_sentinel, rfc3339(datetime.now().astimezone()) or "")
        log.info("scheduler.redispatched_all", extra={"count": len(lost)})

    def sweep(self, conn: Conn) -> None:
        """Queued runs whose RQ job is gone (web died after its commit, a worker died holding
        a popped id, a flow's parent queued by a process that died before enqueueing it) are
        dispatched again; children left by a parent that ended early are cancelled (the
        process that ended it died before it could)."""
        settled = flows.settle(conn, None)
        if self.metrics is not None:
            self.metrics.finished(settled.cancelled)
        stopped = settled.stop
        if stopped:
            dispatch.request_stops(self.services.redis, self.keys, stopped)
        candidates = runs.queued_to_dispatch(conn, older_than_s=SWEEP_OLDER_THAN_S)
        if not candidates:
            return
        pipe = self.services.redis.pipeline(transaction=False)
        for run in candidates:
            pipe.exists(f"rq:job:{run.id}")
        lost = [run for run, held in zip(candidates, pipe.execute(), strict=True) if not held]
        self.enqueue(lost)
        if self.metrics is not None:
            self.metrics.redispatched(lost)
        runs.mark_dispatched(conn, [run.id for run in candidates])
        if lost:
            log.info("scheduler.redispatched", extra={"count": len(lost)})

    def fire_schedules(self, conn: Conn) -> None:
        created: list[Run] = []
        with conn.transaction():
            for row in conn.execute(q("due_schedules"), {"limit": 100}).fetchall():
                run, new = runs.create_run(conn, self._firing(row))
                if new:
                    created.append(run)
                following = next_fire_at(row["cron"], row["every_s"], row["next_fire_at"])
                conn.execute(
                    q("advance_schedule"),
                    {
                        "tenant": row["tenant"],
                        "name": row["name"],
                        "fired_at": row["next_fire_at"],
                        "next_fire_at": following,
                    },
                )
        self.enqueue(created)
        for run in created:
            log.info("schedule.fired", extra={"run_id": run.id, "task": run.task})

    def _firing(self, row: dict[str, Any]) -> NewRun:
        task = self.services.registry.get(row["task"])
        fired = rfc3339(row["next_fire_at"])
        return NewRun(
            tenant=row["tenant"],
            task=row["task"],
            queue=row["queue"] or (task.queue if task and task.queue else "default"),
            input=row["input"],
            priority=5,
            max_attempts=(task.max_attempts if task else None) or 1,
            backoff=task.backoff if task else None,
            timeout_s=task.timeout_s if task else None,
            metadata={"schedule": row["name"], "fire_time": fired},
            scheduled_for=None,
            idempotency_key=f"schedule:{row['name']}:{fired}",
        )

    def retention(self, conn: Conn) -> None:
        limits.prune_starts(conn)
        days = self.services.settings.run_retention_days
        while ids := [
            str(r["id"])
            for r in conn.execute(q("delete_expired_runs"), {"days": days, "limit": 1000})
        ]:
            self.services.redis.delete(*[self.keys.run_stream(i) for i in ids])
            log.info("scheduler.retention_deleted", extra={"count": len(ids)})
            if len(ids) < 1000:
                break
        conn.execute(q("delete_expired_batch_keys"), {"days": days})
        conn.execute(q("delete_expired_webhook_pings"), {"days": days})
