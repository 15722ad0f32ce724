"""RunlaneWorker: the worker class of a stock `rq worker` (or `rq worker-pool`) process.

It keeps RQ's worker registration, heartbeat and commands, and replaces RQ's per-job path: no
fork, no job hash reads, no registries or results. Run ids are popped from the priority lists of
the runlane queues in batches, claimed and recorded in Postgres with one group commit per batch.
The batch grows only while tasks are fast, so a slow task never holds others back.
With RUNLANE_WORKER_CONCURRENCY > 1, attempts run in threads instead (workers.concurrent).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from redis.client import Pipeline
from rq import Queue, worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.job import Job
from rq.worker import SimpleWorker, WorkerStatus

from app import logs
from app.config import Settings
from app.live_workers import CONCURRENCY_FIELD, LIVENESS_S
from app.redis_keys import POP_RUN_IDS, Keys
from app.services import REDIS_DOWN, Services
from workers.concurrent import ConcurrentLoop, idle_too_long
from workers.context import AttemptTimedOut, WorkerShutdown
from workers.execute import Executor, Outcome, ThreadedExecutor
from workers.monitor import STOP_SIGNAL, Monitor, ThreadedMonitor

log = logging.getLogger("runlane.worker")

MAX_BATCH = 128
BATCH_BUDGET_S = 0.005  # a batch's expected task time: the longest a claimed run waits in hand
SHUTDOWN_GRACE_S = 4.0  # under honcho's 5 s between SIGTERM and SIGKILL
IDLE_WAIT_S = 1.0  # a blocking pop wakes this often to notice a stop request


class RunlaneWorker(SimpleWorker):
    def __init__(
        self,
        queues: Sequence[str | Queue] | str | Queue,
        *args: Any,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings or Settings.from_env()
        names = _names(queues)
        # `rq worker` passes "default" when given no queue names: then RUNLANE_QUEUES decides
        self.runlane_queues = self.settings.queues if names == ["default"] else tuple(names)
        keys = Keys(self.settings.prefix)
        expanded = [name for q in self.runlane_queues for name in keys.rq_queues(q)]
        super().__init__(expanded, *args, **kwargs)
        self._services: Services | None = None
        self._executor: Executor | None = None
        self._monitor: Monitor | None = None
        self._signalled_at: float | None = None
        self._saved_handlers: dict[int, Any] = {}
        self._batch = 1
        self._redis_outage = logs.Outage(log, "worker.redis")

    # -- RQ's entry point -------------------------------------------------------------------

    def work(  # type: ignore[override]
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,  # runlane's scheduler process promotes delayed runs
        **_: Any,
    ) -> bool:
        if not logging.getLogger().handlers:
            logs.configure()
        self.bootstrap(logging_level or "INFO", date_format, log_format)
        try:
            return self._work(burst, max_jobs, max_idle_time)
        finally:
            # also when start-up failed (Postgres away, a task module that does not import):
            # the registration goes at once rather than being counted live until it expires
            self._close()

    def _work(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> bool:
        if self.settings.worker_concurrency > 1:
            return self._work_concurrently(burst, max_jobs, max_idle_time)
        services = self._services = Services.build(
            self.settings, pool_size=3, name="runlane-worker"
        )
        executor = self._executor = Executor(services, self.name)
        self._install_signal_handlers()
        executor.signals = _in_main_thread()
        monitor = self._monitor = Monitor(executor, services, self._heartbeat)
        monitor.start()
        return self._loop(burst, max_jobs, max_idle_time) > 0

    def _work_concurrently(
        self, burst: bool, max_jobs: int | None, max_idle_time: int | None
    ) -> bool:
        """Attempts in threads: timeouts and hard stops come from the monitor, not signals."""
        size = self.settings.worker_concurrency
        # threads take a pooled connection only for a moment (progress and log lines)
        services = Services.build(self.settings, pool_size=3 + min(size, 10), name="runlane-worker")
        self._services = services
        executor = self._executor = ThreadedExecutor(services, self.name)
        self._install_signal_handlers()
        monitor = self._monitor = ThreadedMonitor(executor, services, self._heartbeat)
        monitor.start()
        return ConcurrentLoop(self, executor, size).run(burst, max_jobs, max_idle_time) > 0

    def _close(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        if self._executor is not None:
            self._executor.close()
        if self._services is not None:
            self._services.close()
        self.teardown()
        self._restore_signal_handlers()

    def _loop(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        executor = self._executor
        assert executor is not None
        done = 0
        outcomes: list[Outcome] = []
        idle_since = time.monotonic()
        while not self._stop_requested:
            ids = self._pop(self._batch)
            if not ids:
                outcomes = self._flush(outcomes)
                if burst or idle_too_long(idle_since, max_idle_time):
                    break
                ids = self._blocking_pop()
                if not ids:
                    continue
            attempts = executor.commit(outcomes, ids)
            outcomes = self._run_batch(attempts)
            done += len(attempts)
            idle_since = time.monotonic()
            if max_jobs is not None and done >= max_jobs:
                break
        self._flush(outcomes)
        return done

    def _run_batch(self, attempts: list[Any]) -> list[Outcome]:
        executor = self._executor
        assert executor is not None
        outcomes: list[Outcome] = []
        started = time.monotonic()
        slowest = 0.0
        for attempt in attempts:
            if self._stop_requested and outcomes:
                outcomes.append(executor.release(attempt))  # not started: hand it back
                continue
            began = time.monotonic()
            outcomes.append(executor.run(attempt))
            slowest = max(slowest, time.monotonic() - began)
        self._adapt(len(attempts), time.monotonic() - started, slowest)
        return outcomes

    def _adapt(self, count: int, spent: float, slowest: float) -> None:
        """Grow the batch while tasks are fast; back to one as soon as one is slow."""
        if slowest > BATCH_BUDGET_S:
            self._batch = 1
        elif count >= self._batch:
            per_task = spent / max(count, 1)
            fits = int(BATCH_BUDGET_S / per_task) if per_task > 0 else MAX_BATCH
            self._batch = max(1, min(MAX_BATCH, self._batch * 2, fits))

    def _flush(self, outcomes: list[Outcome]) -> list[Outcome]:
        if outcomes and self._executor is not None:
            self._executor.commit(outcomes, [])
        if self.get_state() != WorkerStatus.IDLE:
            self.set_state(WorkerStatus.IDLE)
        return []

    # -- Redis ------------------------------------------------------------------------------

    def _pop(self, count: int, already: Sequence[str] = ()) -> list[str]:
        keys = self.queue_keys()
        job_prefix = Job.redis_job_namespace_prefix
        try:
            popped = self.connection.eval(
                POP_RUN_IDS, len(keys), *keys, count, job_prefix, *already
            )
        except REDIS_DOWN as exc:
            # ids already popped are ours to claim: Postgres alone decides whether they run
            self.redis_unavailable(exc, wait=not already)
            return list(already)
        self._redis_outage.up()
        return [i.decode() if isinstance(i, bytes) else i for i in popped]

    def _blocking_pop(self) -> list[str]:
        try:
            got = self.connection.blpop(self.queue_keys(), timeout=IDLE_WAIT_S)
        except REDIS_DOWN as exc:
            self.redis_unavailable(exc)
            return []
        if not got:
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
            return []
        self.set_state(WorkerStatus.BUSY)
        run_id = got[1].decode() if isinstance(got[1], bytes) else got[1]
        return self._pop(self._batch, [run_id])

    def redis_unavailable(self, exc: Exception, *, wait: bool = True) -> None:
        """Redis is away (restart, failover): keep going and try again in a moment. Attempts in
        hand are still recorded in Postgres; the scheduler dispatches again what Redis lost."""
        self._redis_outage.down(exc)
        if wait and not self._stop_requested:
            time.sleep(IDLE_WAIT_S)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ's idle/busy flag (what `rq info` shows): not worth stopping for when Redis is away."""
        with contextlib.suppress(*REDIS_DOWN):
            super().set_state(state, pipeline)

    def stop_soon(self) -> None:
        """Stop as a first SIGTERM would, from any thread (tests, embedding)."""
        self._stop_requested = True

    def register_birth(self) -> None:
        super().register_birth()
        # RQ's birth expiry is its worker TTL + 60 s (8 min by default): a worker that dies
        # before its first heartbeat (start-up) must leave the registrations as fast as a killed one
        self.connection.expire(self.key, LIVENESS_S)

    def serialize(self) -> dict[Any, Any]:
        """RQ's worker hash, plus what GET /v1/workers shows of runlane's own."""
        return {**super().serialize(), CONCURRENCY_FIELD: self.settings.worker_concurrency}

    def _heartbeat(self) -> None:
        if not self.connection.sismember(self.redis_workers_keys, self.key):
            self._register_again()
        # A short expiry (the monitor beats every 5 s) so that a killed worker leaves the
        # registrations, and so GET /v1/queues and /v1/workers, within seconds, not RQ's 8 min.
        self.heartbeat(timeout=LIVENESS_S)

    def _register_again(self) -> None:
        """Redis restarted empty: be counted among the live workers again. (RQ's register_birth
        would refuse: the idle/busy state written since the restart looks like a live namesake.)"""
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.execute()
        log.info("worker.registered_again")

    # -- signals ----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if not _in_main_thread():
            log.warning("worker.no_signals: not in the main thread, hard stops are disabled")
            return
        handlers = {
            signal.SIGINT: self.request_stop,
            signal.SIGTERM: self.request_stop,
            signal.SIGALRM: self._on_stop_signal,
            STOP_SIGNAL: self._on_stop_signal,
        }
        for signum, handler in handlers.items():
            self._saved_handlers[signum] = signal.signal(signum, handler)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler)

    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: finish the attempt in flight (within the grace), then exit.
        Another one a second or more later: hand the attempt back now."""
        now = time.monotonic()
        if self._signalled_at is not None and now - self._signalled_at < 1.0:
            return  # the same stop sent twice (worker pool + terminal)
        first = self._signalled_at is None
        self._signalled_at = now
        self._stop_requested = True
        log.info("worker.stop_requested", extra={"signal": signum, "warm": first})
        if self._monitor is not None:
            grace = SHUTDOWN_GRACE_S if first else 0.0
            self._monitor.shutdown_deadline = now + grace
        if not first and self._executor is not None and self._executor.current is not None:
            self._executor.current.request_stop(WorkerShutdown)
            self._on_stop_signal(signum, frame)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        attempt = self._executor.current if self._executor else None
        if attempt is None:
            return
        if signum == signal.SIGALRM:
            attempt.request_stop(AttemptTimedOut)
        attempt.raise_if_stopped()

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """No horse: RQ's kill-horse command hands the attempts in flight back instead."""
        for attempt in self._executor.in_flight() if self._executor is not None else []:
            attempt.request_stop(WorkerShutdown)


def _names(queues: Sequence[str | Queue] | str | Queue) -> list[str]:
    items = [queues] if isinstance(queues, str | Queue) else list(queues)
    return [q.name if isinstance(q, Queue) else str(q) for q in items]


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
