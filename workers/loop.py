"""The worker's loop: pop run ids, claim them and record finished attempts in one group commit,
run the attempts; up to `concurrency` at once.

Only as many run ids are popped as there are free slots, so strict priority decides what runs
next. At concurrency 1 the slot is the loop's own thread, where a signal can interrupt a task
(workers.stopping); it takes a batch of runs at once, run one after another, grown only while
tasks are fast, so that cheap attempts share group commits and a slow task never holds others
back. Above 1 attempts run in threads; one that finishes while the loop blocks on the queues
wakes it through a list of the worker's own, in that same BLPOP.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import RedisError
from rq.job import Job
from rq.worker import BaseWorker, WorkerStatus

from app import logs
from app.redis_keys import POP_RUN_IDS
from app.services import REDIS_DOWN, primary_lost, redis_outage
from workers.context import Attempt
from workers.execute import Executor, Outcome
from workers.stopping import Shutdown

log = logging.getLogger("runlane.worker")

MAX_BATCH = 128
BATCH_BUDGET_S = 0.005  # a batch's expected task time: the longest a claimed run waits in hand
IDLE_WAIT_S = 1.0  # a blocking wait wakes this often to notice a stop request
WAKE_TTL_S = 60  # a wake-up token left by a killed worker goes away by itself


class WorkLoop:
    def __init__(
        self, worker: BaseWorker, executor: Executor, shutdown: Shutdown, concurrency: int
    ) -> None:
        self.worker = worker  # RQ's: its queues, its idle/busy state and maintenance
        self.executor = executor
        self.shutdown = shutdown
        self.concurrency = concurrency
        self.batch = concurrency  # runs in flight at most: grows at concurrency 1 (see _adapt)
        self.redis = worker.connection
        self.wake_key = executor.services.keys.worker_wake(worker.name)
        self._finished: list[Outcome] = []
        self._changed = threading.Condition()
        self._blocked = False  # the loop is in BLPOP: a finishing thread must wake it
        self._redis_outage = logs.Outage(log, "worker.redis")

    def run(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        """Work until stopped (or, in burst mode, until the queues are empty); runs claimed."""
        self.redis.delete(self.wake_key)
        try:
            with self._threads() as threads:
                return self._loop(threads, burst, max_jobs, max_idle_time)
        finally:
            with contextlib.suppress(*REDIS_DOWN):  # it expires by itself
                self.redis.delete(self.wake_key)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[ThreadPoolExecutor | None]:
        if self.concurrency == 1:
            yield None
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="runlane-attempt") as pool:
            yield pool

    def _loop(
        self,
        threads: ThreadPoolExecutor | None,
        burst: bool,
        max_jobs: int | None,
        max_idle_time: int | None,
    ) -> int:
        claimed = in_flight = 0
        idle_since = time.monotonic()
        ids: list[str] = []
        while True:
            outcomes = self._take_finished()
            in_flight -= len(outcomes)
            done_popping = self.shutdown.requested or (max_jobs is not None and claimed >= max_jobs)
            free = 0 if done_popping else self.batch - in_flight
            if free and not ids:
                ids = self._pop(free)
            if outcomes or ids:
                attempts = self.executor.commit(outcomes, ids)
                in_flight += len(attempts)
                claimed += len(attempts)
                popped, ids = bool(ids), []
                self._start(threads, attempts)
                if popped or self.executor.requeued:
                    idle_since = time.monotonic()
                    continue  # more may be waiting: look again before blocking
            if not in_flight:
                self._idle()
                if done_popping or burst or idle_too_long(idle_since, max_idle_time):
                    return claimed
            if free and not burst:
                ids = self._blocking_pop(free)
            else:
                self._wait_finished()

    # -- attempts ---------------------------------------------------------------------------

    def _start(self, threads: ThreadPoolExecutor | None, attempts: list[Attempt]) -> None:
        if threads is None:
            self._run_batch(attempts)
            return
        for attempt in attempts:
            threads.submit(self._in_thread, attempt)

    def _run_batch(self, attempts: list[Attempt]) -> None:
        """Concurrency 1: the batch in this thread, one after another. After a stop request only
        the attempt in hand runs; the others, not started, are handed back."""
        started = time.monotonic()
        slowest = 0.0
        for i, attempt in enumerate(attempts):
            began = time.monotonic()
            self._attempt(attempt, hand_back=i > 0 and self.shutdown.requested)
            slowest = max(slowest, time.monotonic() - began)
        self._adapt(len(attempts), time.monotonic() - started, slowest)

    def _adapt(self, count: int, spent: float, slowest: float) -> None:
        """Grow the batch while tasks are fast; back to one as soon as one is slow."""
        if slowest > BATCH_BUDGET_S:
            self.batch = 1
        elif count >= self.batch:
            per_task = spent / max(count, 1)
            fits = int(BATCH_BUDGET_S / per_task) if per_task > 0 else MAX_BATCH
            self.batch = max(1, min(MAX_BATCH, self.batch * 2, fits))

    def _in_thread(self, attempt: Attempt) -> None:
        self._attempt(attempt, hand_back=self.shutdown.requested)  # claimed, not started

    def _attempt(self, attempt: Attempt, hand_back: bool) -> None:
        """Run one attempt (or hand it back) and pass its outcome to the loop."""
        try:
            outcome = self.executor.release(attempt) if hand_back else self.executor.run(attempt)
        except BaseException:  # never lose an attempt: whatever went wrong, hand it back
            log.exception("worker.attempt_crashed", extra={"run_id": attempt.run.id})
            outcome = self.executor.release(attempt)
        with self._changed:
            self._finished.append(outcome)
            self._changed.notify()
            wake, self._blocked = self._blocked, False
        if wake:
            # Redis away: the loop's blocking wait ends within IDLE_WAIT_S anyway
            with contextlib.suppress(*REDIS_DOWN), self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(self.wake_key, 1)
                pipe.expire(self.wake_key, WAKE_TTL_S)
                pipe.execute()

    def _take_finished(self) -> list[Outcome]:
        with self._changed:
            finished, self._finished = self._finished, []
        return finished

    def _wait_finished(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._finished, IDLE_WAIT_S)

    # -- Redis ------------------------------------------------------------------------------

    def _pop(self, count: int, already: Sequence[str] = ()) -> list[str]:
        keys = self.worker.queue_keys()
        job_prefix = Job.redis_job_namespace_prefix
        try:
            popped = self.redis.eval(POP_RUN_IDS, len(keys), *keys, count, job_prefix, *already)
        except RedisError as exc:
            if not redis_outage(exc):
                raise
            # ids already popped are ours to claim: Postgres alone decides whether they run
            self._redis_unavailable(exc, wait=not already)
            return list(already)
        self._redis_outage.up()
        return [i.decode() if isinstance(i, bytes) else i for i in popped]

    def _blocking_pop(self, free: int) -> list[str]:
        """Wait for a run to arrive or an attempt to finish; the run ids popped."""
        with self._changed:
            if self._finished:
                return []
            self._blocked = True
        try:
            got = self.redis.blpop([self.wake_key, *self.worker.queue_keys()], IDLE_WAIT_S)
        except RedisError as exc:
            if not redis_outage(exc):
                raise
            self._redis_unavailable(exc)
            return []
        finally:
            with self._changed:
                self._blocked = False
        if not got:
            if self.worker.should_run_maintenance_tasks:
                self.worker.run_maintenance_tasks()  # type: ignore[no-untyped-call]  # rq: untyped
            return []
        key, value = (v.decode() if isinstance(v, bytes) else v for v in got)
        if key == self.wake_key:
            return []
        self.worker.set_state(WorkerStatus.BUSY)
        return self._pop(free, [value])

    def _redis_unavailable(self, exc: Exception, *, wait: bool = True) -> None:
        """Redis is away (restart, failover): keep going and try again in a moment. Attempts in
        hand are still recorded in Postgres; the scheduler dispatches again what Redis lost."""
        self._redis_outage.down(exc)
        if primary_lost(exc):  # an old primary: connect afresh to the address
            self.redis.connection_pool.disconnect()
        if wait and not self.shutdown.requested:
            time.sleep(IDLE_WAIT_S)

    def _idle(self) -> None:
        if self.worker.get_state() != WorkerStatus.IDLE:
            self.worker.set_state(WorkerStatus.IDLE)


def idle_too_long(since: float, max_idle_time: int | None) -> bool:
    return max_idle_time is not None and time.monotonic() - since >= max_idle_time
