"""RUNLANE_WORKER_CONCURRENCY > 1: up to N attempts of one worker process at once, in threads.

The main thread pops only as many run ids as there are free threads (strict priority still decides
what runs next), and claims them and records finished attempts in one group commit, as the
one-at-a-time loop does; the threads only call tasks. A thread that finishes while the main thread
blocks on the queues wakes it through a list of the worker's own, in that same BLPOP.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from rq.worker import WorkerStatus

from app.services import REDIS_DOWN
from workers.context import Attempt
from workers.execute import Outcome, ThreadedExecutor

if TYPE_CHECKING:
    from workers.worker import RunlaneWorker

log = logging.getLogger("runlane.worker")

IDLE_WAIT_S = 1.0  # a blocking wait wakes this often to notice a stop request
WAKE_TTL_S = 60  # a wake-up token left by a killed worker goes away by itself


class ConcurrentLoop:
    def __init__(self, worker: RunlaneWorker, executor: ThreadedExecutor, size: int) -> None:
        self.worker = worker
        self.executor = executor
        self.size = size
        self.redis = executor.services.redis
        self.wake_key = executor.services.keys.worker_wake(worker.name)
        self._finished: list[Outcome] = []
        self._changed = threading.Condition()
        self._blocked = False  # the main thread is in BLPOP: a finishing thread must wake it

    def run(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        """Work until stopped (or, in burst mode, until the queues are empty); runs claimed."""
        self.redis.delete(self.wake_key)
        try:
            with ThreadPoolExecutor(self.size, thread_name_prefix="runlane-attempt") as threads:
                return self._loop(threads, burst, max_jobs, max_idle_time)
        finally:
            with contextlib.suppress(*REDIS_DOWN):  # it expires by itself
                self.redis.delete(self.wake_key)

    def _loop(
        self,
        threads: ThreadPoolExecutor,
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
            done_popping = self.worker._stop_requested or (
                max_jobs is not None and claimed >= max_jobs
            )
            free = 0 if done_popping else self.size - in_flight
            if free and not ids:
                ids = self.worker._pop(free)
            if outcomes or ids:
                attempts = self.executor.commit(outcomes, ids)
                for attempt in attempts:
                    threads.submit(self._attempt, attempt)
                in_flight += len(attempts)
                claimed += len(attempts)
                if ids:
                    idle_since = time.monotonic()
                ids = []
                continue
            if not in_flight:
                self._idle()
                if done_popping or burst or idle_too_long(idle_since, max_idle_time):
                    return claimed
            if free and not burst:
                ids = self._blocking_pop(free)
            else:
                self._wait_finished()

    def _attempt(self, attempt: Attempt) -> None:
        """In a worker thread: run one attempt and hand its outcome to the main thread."""
        try:
            if self.worker._stop_requested:
                outcome = self.executor.release(attempt)  # claimed, not started: hand it back
            else:
                outcome = self.executor.run(attempt)
        except BaseException:  # never lose an attempt: whatever went wrong, hand it back
            log.exception("worker.attempt_crashed", extra={"run_id": attempt.run.id})
            outcome = self.executor.release(attempt)
        with self._changed:
            self._finished.append(outcome)
            self._changed.notify()
            wake, self._blocked = self._blocked, False
        if wake:
            # Redis away: the main thread's blocking wait ends within IDLE_WAIT_S anyway
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

    def _blocking_pop(self, free: int) -> list[str]:
        """Wait for a run to arrive or an attempt to finish; the run ids popped."""
        with self._changed:
            if self._finished:
                return []
            self._blocked = True
        try:
            keys = [self.wake_key, *self.worker.queue_keys()]
            got = self.worker.connection.blpop(keys, timeout=IDLE_WAIT_S)
        except REDIS_DOWN as exc:
            self.worker.redis_unavailable(exc)
            return []
        finally:
            with self._changed:
                self._blocked = False
        if not got:
            if self.worker.should_run_maintenance_tasks:
                self.worker.run_maintenance_tasks()
            return []
        key, value = (v.decode() if isinstance(v, bytes) else v for v in got)
        if key == self.wake_key:
            return []
        self.worker.set_state(WorkerStatus.BUSY)
        return self.worker._pop(free, [value])

    def _idle(self) -> None:
        if self.worker.get_state() != WorkerStatus.IDLE:
            self.worker.set_state(WorkerStatus.IDLE)


def idle_too_long(since: float, max_idle_time: int | None) -> bool:
    return max_idle_time is not None and time.monotonic() - since >= max_idle_time
