"""Attempts: claimed in Postgres (fencing), the task called, the outcome recorded.

The worker claims a batch of runs and records a batch of outcomes in one transaction (group
commit: one WAL flush for many state changes), each change still guarded and with its event.
`perform` is the RQ job function, for the rare job a stock RQ worker picks up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from app import attempts, dispatch, flows, logs, runs
from app.attempts import Change
from app.config import Settings
from app.domain import Run, RunStatus
from app.observability import tracing
from app.observability.metrics import WorkerMetrics
from app.services import REDIS_DOWN, Services
from app.tasks import TaskDef, Unrecoverable
from workers import backoff
from workers.context import Attempt, AttemptContext
from workers.spans import AttemptSpans
from workers.stopping import (
    AttemptCancelled,
    AttemptTimedOut,
    Delivery,
    ThreadDelivery,
    WorkerShutdown,
)

log = logging.getLogger("runlane.execute")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the state change that records it."""

    run: Run
    change: Change
    seconds: float | None = None  # how long the task ran, for its metrics (None: it did not)


class Executor:
    """Claims runs and records outcomes on one persistent Postgres connection, that of the
    worker's loop; calls tasks in whichever thread runs them (the loop's own at concurrency 1),
    their progress and log lines each on a pooled connection of its own."""

    def __init__(
        self,
        services: Services,
        worker: str,
        delivery: Delivery | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.settings = services.settings
        self.worker = worker
        self.delivery = delivery or ThreadDelivery()  # how stops reach this worker's tasks
        self.conn = services.pool.getconn()
        # claimed, not yet recorded: the monitor renews their leases and watches for cancels
        self.in_hand: dict[str, Attempt] = {}
        # their tasks running now: the monitor polls their cancel keys, the watchdog stops them
        self.running: dict[str, Attempt] = {}
        self._reconnects = 0  # connections replaced after Postgres dropped one
        # runs the last commit queued again (immediate retries, held runs it released), which
        # the loop may pop at once
        self.requeued = 0
        # the attempts' spans; None while tracing is off, so the hot path checks one attribute
        self.spans = AttemptSpans(worker) if tracing.enabled() else None

    def close(self) -> None:
        self.services.pool.putconn(self.conn)

    def commit(self, outcomes: list[Outcome], claim_ids: list[str]) -> list[Attempt]:
        """Record outcomes and claim the next runs, in one transaction; the attempts claimed."""
        lease = self.settings.lease_seconds
        changes = [o.change for o in outcomes]
        changes += [attempts.claim_change(i, worker=self.worker, lease_s=lease) for i in claim_ids]
        reconnects = self._reconnects
        spans = self.spans
        began = time.time_ns() if spans else 0
        done, released = self._group_commit(changes)
        if spans:
            spans.committed(changes[: len(outcomes)], done[: len(outcomes)], began, time.time_ns())
        self._after(outcomes, done[: len(outcomes)], released)
        started = [run for run in done[len(outcomes) :] if run is not None]
        if self._reconnects != reconnects:
            started += self._claimed_before_the_loss(claim_ids, started)
        if spans:
            spans.claimed(started, began, time.time_ns())
        claimed = [Attempt(run, self.delivery) for run in started]
        if self.metrics is not None:
            self.metrics.claimed(started)
        for attempt in claimed:
            self.in_hand[attempt.run.id] = attempt
        return claimed

    def run(self, attempt: Attempt) -> Outcome:
        """Call the task for a claimed attempt; never raises for what the task does."""
        run = attempt.run
        task = self.services.registry.get(run.task)
        if task is None:
            error = {"type": "UnknownTask", "message": f"no task {run.task!r} in this worker"}
            return Outcome(run, attempts.fail_change(run, error))
        if attempt.cancel.is_set():
            return Outcome(run, attempts.cancel_change(run))
        return self._watched(attempt, task)

    def in_flight(self) -> list[Attempt]:
        """The attempts whose tasks are running now."""
        return list(self.running.values())

    def release(self, attempt: Attempt) -> Outcome:
        return Outcome(attempt.run, attempts.release_change(attempt.run))

    def report(self, run: Run, kind: str, data: dict[str, Any]) -> bool:
        """A task's progress or log line, committed with its event at once; True if cancelled.
        From the task's thread: a pooled connection (the loop's is the group commit's)."""

        def work() -> bool:
            with self.services.pool.connection() as conn:
                return _report(conn, run, kind, data)

        cancelled = while_database_away(work, self.services.pool.check, self.settings.lease_seconds)
        self.services.nudge_relay()
        return cancelled

    def _watched(self, attempt: Attempt, task: TaskDef) -> Outcome:
        """The task called where the monitor and the watchdog can see it."""
        attempt.timeout = attempt.run.timeout_s or task.timeout_s
        self.running[attempt.run.id] = attempt
        try:
            return self._call(attempt, task)
        finally:
            self.running.pop(attempt.run.id, None)

    def _call(self, attempt: Attempt, task: TaskDef) -> Outcome:
        began = time.monotonic()
        outcome = self._outcome(attempt, task)
        return Outcome(outcome.run, outcome.change, time.monotonic() - began)

    def _outcome(self, attempt: Attempt, task: TaskDef) -> Outcome:
        run = attempt.run
        if self.spans is None and run.traceparent is None:  # no trace: nothing to bind
            return self._called(attempt, task, None)
        if self.spans is None:
            trace: contextlib.AbstractContextManager[str | None] = contextlib.nullcontext(
                tracing.trace_id_of(run.traceparent)
            )
        else:
            trace = self.spans.running(run)
        with trace as trace_id, logs.trace_id_bound(trace_id):
            return self._called(attempt, task, trace_id)

    def _called(self, attempt: Attempt, task: TaskDef, trace_id: str | None) -> Outcome:
        """The task called with its context (its run's trace id) and its outcome."""
        run = attempt.run
        ctx = AttemptContext(attempt, self.report, self._children(run), trace_id)
        try:
            with attempt.running_task():
                result = task.fn(ctx, run.input)
            json.dumps(result)  # a result Postgres cannot store fails the attempt here
        except AttemptTimedOut:
            message = f"attempt {run.attempt} ran longer than timeout_s={attempt.timeout}"
            return self._failed(run, task, {"type": "Timeout", "message": message})
        except AttemptCancelled:
            return Outcome(run, attempts.cancel_change(run))
        except WorkerShutdown:
            return self.release(attempt)
        except Unrecoverable as exc:
            return Outcome(run, attempts.fail_change(run, error_of(exc)))
        except Exception as exc:
            log.info("attempt.error", extra={"run_id": run.id, "error": error_of(exc)})
            return self._failed(run, task, error_of(exc))
        return Outcome(run, attempts.finish_change(run, result))

    def _children(self, run: Run) -> list[dict[str, Any]]:
        """A flow parent's children for ctx.children (read on a pooled connection: this may be
        a task's thread)."""
        if run.children_total == 0:
            return []

        def work() -> list[dict[str, Any]]:
            with self.services.pool.connection() as conn:
                return flows.children_of(conn, run.id)

        return while_database_away(work, self.services.pool.check, self.settings.lease_seconds)

    def _failed(self, run: Run, task: TaskDef, error: dict[str, str]) -> Outcome:
        if run.budget_attempt >= run.max_attempts:
            return Outcome(run, attempts.fail_change(run, error))
        policy = run.backoff if run.backoff is not None else task.backoff
        delay = backoff.delay_ms(policy, run.budget_attempt)
        return Outcome(run, attempts.retry_change(run, error, delay))

    def _group_commit(self, changes: list[Change]) -> tuple[list[Run | None], list[Run]]:
        """Each change's run (None if its guard refused it) and the held runs released."""
        try:
            committed = self._reconnecting(lambda conn: attempts.commit(conn, changes))
            done, released = committed.done, committed.released
        except psycopg.Error:
            # One bad change must not sink the batch: apply them one by one, each on its own.
            log.exception("execute.group_commit_failed")
            self._reconnect_if_broken()
            singles = [self._single(change) for change in changes]
            done = [one.done[0] if one else None for one in singles]
            released = [run for one in singles if one for run in one.released]
        if any(run is not None for run in done):
            self.services.nudge_relay()  # each change that went through wrote its event
        return done, released

    def _single(self, change: Change) -> attempts.Committed | None:
        try:
            return attempts.commit(self.conn, [change])
        except psycopg.Error:
            log.exception("execute.change_failed", extra={"change": change.query})
            self._reconnect_if_broken()
            return None

    def _claimed_before_the_loss(self, claim_ids: list[str], started: list[Run]) -> list[Run]:
        """A commit that lost its connection may have gone through: its claims, repeated, then
        find their runs running already. Those running for this worker and not in hand are
        ours to run; left alone they would only stall."""
        known = {run.id for run in started} | set(self.in_hand)
        unknown = list(dict.fromkeys(i for i in claim_ids if i not in known))
        if not unknown:
            return []
        found = self._reconnecting(
            lambda conn: attempts.claimed_by_worker(conn, unknown, self.worker)
        )
        for run in found:
            log.warning("execute.claim_recovered", extra={"run_id": run.id})
        return found

    def _reconnecting(self, work: Callable[[runs.Conn], T]) -> T:
        return while_database_away(
            lambda: work(self.conn), self._reconnect_if_broken, self.settings.lease_seconds
        )

    def _reconnect_if_broken(self) -> None:
        if self.conn.closed or self.conn.broken:
            self._reconnects += 1
            self.services.pool.putconn(self.conn)
            # the pool's idle connections died with this one (a Postgres restart): replace them
            self.services.pool.check()
            self.conn = self.services.pool.getconn()

    def _after(self, outcomes: list[Outcome], done: list[Run | None], released: list[Run]) -> None:
        """Follow-ups: a change refused because cancel was requested meanwhile ends the run
        cancelled; runs queued again (immediate retry, hand-back) and held runs released by
        the slots that freed go back to Redis."""
        cancels: list[Outcome] = []
        queued: list[Run] = list(released)
        for outcome, run in zip(outcomes, done, strict=True):
            self.in_hand.pop(outcome.run.id, None)
            if run is None and outcome.change.query != "cancel_running":
                cancels.append(
                    Outcome(outcome.run, attempts.cancel_change(outcome.run), outcome.seconds)
                )
            elif run is not None and run.status is RunStatus.QUEUED:
                queued.append(run)
        self._observe(outcomes, done)
        if cancels:
            cancelled, more = self._group_commit([o.change for o in cancels])
            self._observe(cancels, cancelled)
            queued += more
        self._settle_flows([outcome.run for outcome in outcomes])
        self.requeued = len(queued)
        if queued:
            try:
                dispatch.enqueue(self.services.redis, self.services.keys, queued)
            except REDIS_DOWN as exc:  # queued in Postgres: the scheduler's sweep dispatches them
                log.warning("dispatch.failed", extra={"count": len(queued), "error": str(exc)})

    def _observe(self, outcomes: list[Outcome], done: list[Run | None]) -> None:
        if self.metrics is not None and outcomes:
            ended = [(o.run, o.change.query, o.seconds) for o in outcomes]
            self.metrics.recorded(ended, done)

    def _settle_flows(self, ended: list[Run]) -> None:
        """The parents these attempts' ends queued go to RQ, the children a failed parent
        leaves are cancelled (app.flows.settle); the scheduler does it if this fails."""
        if not any(run.root_id for run in ended):
            return
        svc = self.services
        try:
            cancelled = self._reconnecting(
                lambda conn: flows.after_change(conn, svc.redis, svc.keys, ended)
            )
            if self.metrics is not None:
                self.metrics.finished_elsewhere(cancelled)
        except psycopg.Error:
            log.exception("execute.settle_failed")
            self._reconnect_if_broken()


def while_database_away(work: Callable[[], T], recover: Callable[[], None], patience: float) -> T:
    """`work`, and again after `recover` while Postgres is away (restart, failover, a killed
    backend), for up to `patience` seconds (a lease): an outcome or a progress line is recorded
    late rather than lost, and a task never fails for our connection's sake. If the lost
    connection had in fact committed, the state changes' guards make the repeat a no-op."""
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return work()
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("execute.reconnecting", extra={"error": str(exc).strip()})
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        recover()


def _report(conn: runs.Conn, run: Run, kind: str, data: dict[str, Any]) -> bool:
    if kind == "progress":
        return attempts.record_progress(conn, run, data["percent"], data["message"])
    return attempts.record_log(conn, run, data["message"], data["level"])


def error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


_executor: Executor | None = None


def perform(run_id: str) -> None:
    """The RQ job function: one attempt of one run, for a worker that is not a RunlaneWorker."""
    global _executor
    if _executor is None:
        _executor = Executor(Services.build(Settings.from_env(), pool_size=2), "rq-job")
    executor = _executor
    for attempt in executor.commit([], [run_id]):
        executor.commit([executor.run(attempt)], [])
