"""RunlaneWorker: the worker class of a stock `rq worker` (or `rq worker-pool`) process.

It keeps RQ's worker registration, heartbeat, commands and signals, and replaces RQ's per-job
path (workers.loop): no fork, no job hash reads, no registries or results. Run ids are claimed
and recorded in Postgres with group commits; up to RUNLANE_WORKER_CONCURRENCY attempts at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from redis.client import Pipeline
from rq import Queue, worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.worker import DequeueStrategy, SimpleWorker

from app import logs
from app.config import Settings
from app.live_workers import CONCURRENCY_FIELD, LIVENESS_S
from app.observability import metrics, tracing
from app.redis_keys import Keys
from app.services import REDIS_DOWN, Services
from workers.execute import Executor
from workers.loop import WorkLoop
from workers.monitor import Monitor
from workers.stopping import Delivery, Handler, Shutdown, Watchdog, delivery_for

log = logging.getLogger("runlane.worker")


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
        self.shutdown = Shutdown()
        self._saved_handlers: dict[int, Any] = {}

    def work(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        """RQ's entry point, with RQ's registration around runlane's loop. `with_scheduler` and
        `dequeue_strategy` are left to runlane: its scheduler process promotes delayed runs, and
        strict priority decides what is popped."""
        if not logging.getLogger().handlers:
            logs.configure()
        self.bootstrap(logging_level or "INFO", date_format, log_format)
        try:
            return self._work(burst, max_jobs, max_idle_time) > 0
        finally:
            # also when start-up failed (Postgres away, a task module that does not import):
            # the registration goes at once rather than being counted live until it expires
            self.teardown()  # type: ignore[no-untyped-call]  # rq: untyped
            self._restore_signal_handlers()

    def _work(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        size = self.settings.worker_concurrency
        with contextlib.ExitStack() as cleanup:
            # here, not at import: `rq worker-pool` forks its workers before they get to work
            if tracing.setup(self.settings, "runlane-worker"):
                cleanup.callback(tracing.shutdown)
            # beside the loop's connection and the monitor's: tasks' progress and log lines
            pool_size = 2 + min(size, 10)
            services = Services.build(self.settings, pool_size=pool_size, name="runlane-worker")
            cleanup.callback(services.close)
            delivery = delivery_for(size)
            registry = metrics.registry_for(self.settings)
            server = metrics.serve(self.settings, registry)
            if server is not None:
                cleanup.callback(server.close)
            observed = metrics.WorkerMetrics(registry)
            observed.recorder.start()
            cleanup.callback(observed.recorder.stop)
            executor = Executor(services, self.name, delivery, observed)
            cleanup.callback(executor.close)
            self._install_signal_handlers_of(delivery)
            grace = self.settings.cancel_grace_seconds
            for thread in (
                Monitor(executor, services, self._heartbeat),
                Watchdog(executor.in_flight, self.shutdown, grace),
            ):
                thread.start()
                cleanup.callback(thread.stop)
            loop = WorkLoop(self, executor, self.shutdown, size)
            claimed = loop.run(burst, max_jobs, max_idle_time)
        return claimed

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's SIGINT/SIGTERM handler (and RQ's shutdown command): finish the attempts in
        flight within the grace, then exit. Another signal a second or more later: hand them
        back now. Callable from any thread."""
        self.shutdown.request(signum)

    # -- RQ's registration ------------------------------------------------------------------

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ's idle/busy flag (what `rq info` shows): not worth stopping for when Redis is away."""
        with contextlib.suppress(*REDIS_DOWN):
            super().set_state(state, pipeline)

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[no-untyped-call]  # rq: untyped
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

    def _install_signal_handlers_of(self, delivery: Delivery) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("worker.no_signals: not in the main thread, SIGINT and SIGTERM left alone")
            return
        handlers: dict[int, Handler] = {
            signal.SIGINT: self.request_stop,
            signal.SIGTERM: self.request_stop,
            **delivery.handlers(),
        }
        for signum, handler in handlers.items():
            self._saved_handlers[signum] = signal.signal(signum, handler)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler)


def _names(queues: Sequence[str | Queue] | str | Queue) -> list[str]:
    items = [queues] if isinstance(queues, str | Queue) else list(queues)
    return [q.name if isinstance(q, Queue) else str(q) for q in items]
