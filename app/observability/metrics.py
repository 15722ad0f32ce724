"""Prometheus metrics of the processes beside the web (worker, relay, scheduler) and those the web
shares with them, and their exposition: into one multiprocess folder that the web's /metrics adds
up (`runlane dev`, any one machine), or on a port of each process's own (RUNLANE_METRICS_PORT).

Labels come from bounded sets only (queue, task, outcome, status): never a run id or a tenant.
"""

from __future__ import annotations

import bisect
import errno
import logging
import threading
from collections import Counter as CounterOf
from collections.abc import Iterable, Sequence
from datetime import datetime
from http.server import ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import MetricsHandler

from app.config import Settings
from app.domain import Run

log = logging.getLogger("runlane.metrics")

# Lags are milliseconds when all is well and seconds when not (the relay alert is at 5 s).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A queue wait is milliseconds with an idle worker, minutes or hours behind a backlog or a limit.
WAIT_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0, 14400.0,
)  # fmt: skip
# Attempts and runs last from a no-op's millisecond to a report's hours.
DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
    3600.0, 7200.0, 14400.0, 43200.0,
)  # fmt: skip
# How an attempt ended, by the state change that recorded it (a hand-back is no attempt's end).
OUTCOMES = {
    "finish_attempt": "succeeded",
    "retry_attempt": "retried",
    "fail_attempt": "failed",
    "cancel_running": "cancelled",
}
FLUSH_S = 1.0  # how stale a worker's or relay's metrics may be
PORTS_TRIED = 100  # RUNLANE_METRICS_PORT and the next ones, for several processes on one host

Registry = CollectorRegistry | None  # None: the shared folder holds the values


def registry_for(settings: Settings) -> Registry:
    """Where a process registers its metrics: nowhere when its values go to the shared folder
    (prometheus_client writes them to files there), else a registry of the process's own."""
    return None if settings.metrics_dir else CollectorRegistry()


def collecting(settings: Settings, registry: Registry) -> CollectorRegistry:
    """What an exposition reads: every process's values in the shared folder, else `registry`."""
    if settings.metrics_dir is not None:
        found = CollectorRegistry()
        multiprocess.MultiProcessCollector(found, path=str(settings.metrics_dir))  # type: ignore[no-untyped-call]
        return found
    if registry is None:
        raise ValueError("a process without the shared folder has a registry of its own")
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text of any registry (the webhooks' metrics use it too)."""
    return generate_latest(registry)


Labels = tuple[str, ...]


def observe_all(histogram: Histogram, observations: Iterable[tuple[Labels, float]]) -> None:
    """Many (labels, value) observations, each label set's bucket counts and sum added once:
    Histogram.observe writes a sum and a bucket per value, under the shared folder two locked
    writes to an mmap'd file (some 3 µs each)."""
    grouped: dict[Labels, list[float]] = {}
    for labels, value in observations:
        grouped.setdefault(labels, []).append(value)
    for labels, values in grouped.items():
        child = histogram.labels(*labels)
        bounds = child._upper_bounds  # prometheus_client's own, +Inf last: every value fits one
        counts = [0] * len(bounds)
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
        for place, count in enumerate(counts):
            if count:
                child._buckets[place].inc(count)
        child._sum.inc(sum(values))


class Recorder:
    """Observations held in memory and written to their metrics once a period (by a thread of
    its own) and at stop, so that a hot path (a worker's group commit, a relay's batch) only
    appends to a list: written one by one, a no-op job's four metrics cost the worker 25-50 µs
    of its 110 µs of CPU. A process killed outright loses its last period's observations."""

    def __init__(self, period_s: float = FLUSH_S) -> None:
        self.period_s = period_s
        self._lock = threading.Lock()
        self._observed: dict[Histogram, list[tuple[Labels, float]]] = {}
        self._counted: dict[Counter, list[Labels]] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)

    def observe(self, histogram: Histogram, observations: Sequence[tuple[Labels, float]]) -> None:
        if observations:
            with self._lock:
                self._observed.setdefault(histogram, []).extend(observations)

    def count(self, counter: Counter, labels: Sequence[Labels]) -> None:
        if labels:
            with self._lock:
                self._counted.setdefault(counter, []).extend(labels)

    def flush(self) -> None:
        with self._lock:
            observed, self._observed = self._observed, {}
            counted, self._counted = self._counted, {}
        for histogram, observations in observed.items():
            observe_all(histogram, observations)
        for counter, labels in counted.items():
            for values, count in CounterOf(labels).items():
                counter.labels(*values).inc(count)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stopped.wait(self.period_s):
            self.flush()


def runs_finished(registry: Registry) -> Counter:
    """Runs that reached a terminal status: counted by the worker (an attempt's end), the
    scheduler (a second stall) and the web (a cancel of a run not running)."""
    return Counter(
        "runlane_runs_finished_total",
        "Runs that reached a terminal status, by queue and status.",
        ["queue", "status"],
        registry=registry,
    )


def count_finished(counter: Counter, runs: Iterable[Run]) -> None:
    for (queue, status), count in CounterOf(
        (run.queue, run.status.value) for run in runs if run.status.terminal
    ).items():
        counter.labels(queue, status).inc(count)


def tail_lag(registry: Registry) -> Histogram:
    return Histogram(
        "runlane_tail_delivery_lag_seconds",
        "From an event's commit to its sending to a tail's client (WebSocket or SSE), by queue.",
        ["queue"],
        buckets=LAG_BUCKETS,
        registry=registry,
    )


def queue_wait_s(run: Run) -> float | None:
    """From when a claimed run became due to its attempt's start, in Postgres's clock: its first
    dispatch (a delayed run's promotion, a flow parent's release by its children), or a later
    due time (a retry's backoff, a manual retry); after a stall, its re-queue. Time held back by
    a queue limit counts as waiting. (After a stall, a re-dispatch by the scheduler's sweep of a
    run Redis lost moves dispatched_at too: such a wait reads short.)"""
    if run.started_at is None:
        return None
    due = max(run.scheduled_for, run.first_dispatched_at or run.created_at)
    if run.stalls and run.dispatched_at is not None:
        due = max(due, run.dispatched_at)
    return max(0.0, (run.started_at - due).total_seconds())


class WorkerMetrics:
    """A worker process's: queue waits at the claim, attempts and runs as they are recorded,
    held by a Recorder (start it, and stop it to write the rest)."""

    def __init__(self, registry: Registry, period_s: float = FLUSH_S) -> None:
        self.recorder = Recorder(period_s)
        self.queue_wait = Histogram(
            "runlane_queue_wait_seconds",
            "From a run becoming due (queued, or due again after a retry) to its attempt's start.",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "runlane_attempt_duration_seconds",
            "How long an attempt's task ran, by queue, task and outcome.",
            ["queue", "task", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.run_duration = Histogram(
            "runlane_run_duration_seconds",
            "From a run's creation to its terminal status, by queue, task and status.",
            ["queue", "task", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.runs_finished = runs_finished(registry)

    def claimed(self, runs: list[Run]) -> None:
        waits = []
        for run in runs:
            seconds = queue_wait_s(run)
            if seconds is not None:
                waits.append(((run.queue,), seconds))
        self.recorder.observe(self.queue_wait, waits)

    def recorded(self, ended: list[tuple[Run, str, float | None]], done: list[Run | None]) -> None:
        """Attempts whose ends committed: (the run as claimed, the change's query, the task's
        seconds) beside the run the change made (None: its guard refused it)."""
        attempts, durations, finished = [], [], []
        for (claimed, query, seconds), run in zip(ended, done, strict=True):
            outcome = OUTCOMES.get(query)
            if run is None or outcome is None:
                continue
            if seconds is not None:
                attempts.append(((claimed.queue, claimed.task, outcome), seconds))
            if run.finished_at is not None:  # terminal: only those changes set it
                status = run.status.value
                took = max(0.0, (run.finished_at - run.created_at).total_seconds())
                durations.append(((run.queue, run.task, status), took))
                finished.append((run.queue, status))
        self.recorder.observe(self.attempt_duration, attempts)
        self.recorder.observe(self.run_duration, durations)
        self.recorder.count(self.runs_finished, finished)

    def finished_elsewhere(self, runs: list[Run]) -> None:
        """Runs ended by a change of another run (a flow's children cancelled with it)."""
        self.recorder.count(self.runs_finished, [(r.queue, r.status.value) for r in runs])


class Published(Protocol):
    """An event the relay sent (workers.relay.Outgoing)."""

    @property
    def queue(self) -> str: ...
    @property
    def at(self) -> datetime: ...


class RelayMetrics:
    """The relay's lag, held by a Recorder (start it, and stop it to write the rest)."""

    def __init__(self, registry: Registry, period_s: float = FLUSH_S) -> None:
        self.recorder = Recorder(period_s)
        self.relay_lag = Histogram(
            "runlane_relay_lag_seconds",
            "From an event's commit in Postgres to its XADD to the streams, by queue.",
            ["queue"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def published(self, events: Iterable[Published], now: float) -> None:
        """A batch just in Redis; `now` the epoch seconds when its XADDs returned."""
        lags = [((e.queue,), max(0.0, now - e.at.timestamp())) for e in events]
        self.recorder.observe(self.relay_lag, lags)


class SchedulerMetrics:
    def __init__(self, registry: Registry) -> None:
        self.stalls_found = Counter(
            "runlane_stalls_found_total",
            "Attempts found stalled (their lease expired), by queue.",
            ["queue"],
            registry=registry,
        )
        self.sweep_redispatches = Counter(
            "runlane_sweep_redispatches_total",
            "Queued runs Redis had lost, dispatched again by the scheduler, by queue.",
            ["queue"],
            registry=registry,
        )
        self.runs_finished = runs_finished(registry)

    def stalled(self, recovered: list[Run]) -> None:
        for queue, count in CounterOf(run.queue for run in recovered).items():
            self.stalls_found.labels(queue).inc(count)
        self.finished(recovered)  # a second stall fails the run

    def finished(self, runs: list[Run]) -> None:
        count_finished(self.runs_finished, runs)

    def redispatched(self, lost: list[Run]) -> None:
        for queue, count in CounterOf(run.queue for run in lost).items():
            self.sweep_redispatches.labels(queue).inc(count)


class MetricsServer:
    """/metrics of a process other than the web, on RUNLANE_METRICS_PORT or the first free port
    above it (several copies on one host: base, base + 1, …; each logs the one it took)."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        if settings.metrics_port is None:
            raise ValueError("RUNLANE_METRICS_PORT is not set")
        handler = MetricsHandler.factory(collecting(settings, registry))
        self.server = _bind(settings.bind_host, settings.metrics_port, handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics.listening", extra={"port": self.port})
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(settings: Settings, registry: Registry) -> MetricsServer | None:
    """The process's own /metrics when RUNLANE_METRICS_PORT is set."""
    if settings.metrics_port is None:
        return None
    return MetricsServer(settings, registry).start()


def _bind(host: str, base: int, handler: Any) -> ThreadingHTTPServer:
    for port in range(base, min(base + PORTS_TRIED, 65536)):
        try:
            server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        server.daemon_threads = True
        return server
    raise OSError(errno.EADDRINUSE, f"no free metrics port in {base}..{base + PORTS_TRIED - 1}")
