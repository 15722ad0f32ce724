"""Prometheus metrics of the web process, and their exposition.

Under gunicorn several processes serve requests: with PROMETHEUS_MULTIPROC_DIR set (the gunicorn
config sets it before workers start, or `runlane dev` for every process of its stack), each
process writes its values to files there and /metrics adds them up across processes, the
workers', relay's and scheduler's too when they share the folder. Gauges of queue depths and
live workers are read from Postgres and Redis at each scrape.
"""

from __future__ import annotations

import re
import time
from collections import Counter as CounterOf
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.domain import Run
from app.observability import metrics as shared
from app.web.streams import Entry

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Every label value comes from a fixed set, whatever clients send: a label value made from
# request input (a made-up method, a random path) would be a new time series per request.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
UNMATCHED = "unmatched"  # every path no route matches (404, and 405s of unknown methods)


@dataclass(frozen=True)
class Gauges:
    """What /metrics reads at each scrape, summed over tenants; None: it could not be read."""

    held: list[tuple[str, str, str, int]] | None = None  # app.limits.held_counts
    depths: list[tuple[str, int, int]] | None = None  # (queue, queued, runnable)
    workers: dict[str, int] | None = None  # queue -> live workers serving it


class Metrics:
    """The app's metric objects, made per app so that tests can build many apps."""

    def __init__(self, folder: Path | None = None) -> None:
        # In multiprocess mode (`folder`: Settings.metrics_dir) values live in files, so they are
        # registered nowhere; else each app has its own registry (the global one would refuse a
        # second app's metrics).
        self.folder = folder
        self.registry = None if folder else CollectorRegistry()
        if self.registry is not None:
            ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "runlane_http_requests_total",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "runlane_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.runs_created = Counter(
            "runlane_runs_created_total",
            "Runs created through the API, by queue.",
            ["queue"],
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "runlane_idempotent_replays_total",
            "Responses replayed for a repeated Idempotency-Key.",
            registry=self.registry,
        )
        self.tail_lag = shared.tail_lag(self.registry)
        self.runs_finished = shared.runs_finished(self.registry)

    def finished(self, runs: list[Run]) -> None:
        """Runs the web ended (a cancel of a run not running: a running one ends in its worker)."""
        shared.count_finished(self.runs_finished, runs)

    def sent(self, entry: Entry, live_after: int) -> None:
        """An entry just sent to a tail's client: its lag, if it was committed while the tail was
        open (numbered past `live_after`, the stream's top when the tail began). History sent at
        the start of a tail is old by design and would only say how old."""
        if entry.number > live_after:
            at = _event_at(entry.event)
            if at is not None:
                self.tail_lag.labels(entry.queue).observe(max(0.0, time.time() - at))

    def init_app(self, app: Flask) -> None:
        app.before_request(_start_timer)
        app.after_request(self._observe)

    def _observe(self, response: Response) -> Response:
        started = g.get("started_at")
        method, route, status = request_labels(response.status_code)
        self.requests.labels(method, route, status).inc()
        if started is not None:
            self.latency.labels(method, route).observe(time.perf_counter() - started)
        return response

    def exposition(self, gauges: Gauges | None = None) -> Response:
        """The process's metrics (all processes' under gunicorn, and those of every process
        sharing the folder), and the gauges read at this scrape."""
        if self.registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(self.folder))  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        found = gauges or Gauges()
        families = []
        if found.held is not None:
            families.append(_held_runs(found.held))
        if found.depths is not None:
            families += _depths(found.depths)
        if found.workers is not None:
            families.append(_workers(found.workers, found.depths or []))
        once = CollectorRegistry()
        once.register(_Once(families))
        text = shared.exposition(registry) + shared.exposition(once)
        return Response(text, content_type=CONTENT_TYPE_LATEST)


_CONVERTER = re.compile(r"<[^:<>]+:([^<>]+)>")  # <run_id:run_id> is labelled <run_id>


def request_labels(status_code: int) -> tuple[str, str, str]:
    """(method, route, status) of the current request, each from a bounded set."""
    method = request.method if request.method in METHODS else OTHER
    # The route template, never the raw path: ids would make label sets unbounded.
    route = _CONVERTER.sub(r"<\1>", request.url_rule.rule) if request.url_rule else UNMATCHED
    status = str(status_code) if 100 <= status_code <= 599 else OTHER
    return method, route, status


def _held_runs(held: list[tuple[str, str, str, int]]) -> Metric:
    """Runs queue limits hold back now, per queue and reason, summed over tenants (queue names
    and reasons are bounded sets; tenant names stay out of an unauthenticated endpoint)."""
    totals: CounterOf[tuple[str, str]] = CounterOf()
    for _tenant, queue, reason, count in held:
        totals[queue, reason] += count
    # a metric family, not a Gauge: under gunicorn a Gauge would write a file per process
    family = GaugeMetricFamily(
        "runlane_runs_held",
        "Queued runs a queue limit holds back now, by queue and reason.",
        labels=["queue", "reason"],
    )
    for (queue, reason), count in sorted(totals.items()):
        family.add_metric([queue, reason], count)
    return family


def _depths(depths: list[tuple[str, int, int]]) -> list[Metric]:
    queued = GaugeMetricFamily(
        "runlane_runs_queued", "Queued runs now, by queue (held back by a limit or not).",
        labels=["queue"],
    )  # fmt: skip
    runnable = GaugeMetricFamily(
        "runlane_runs_runnable",
        "Queued runs a worker could start now (not held back, queue not paused), by queue.",
        labels=["queue"],
    )
    for queue, count, ready in sorted(depths):
        queued.add_metric([queue], count)
        runnable.add_metric([queue], ready)
    return [queued, runnable]


def _workers(served: dict[str, int], depths: list[tuple[str, int, int]]) -> Metric:
    """Live workers per queue, a 0 for each queue with queued runs and none (what the alert on
    work without workers looks for)."""
    family = GaugeMetricFamily(
        "runlane_workers_live", "Live workers serving each queue.", labels=["queue"]
    )
    counts = {queue: 0 for queue, _, _ in depths} | served
    for queue, count in sorted(counts.items()):
        family.add_metric([queue], count)
    return family


def _event_at(event: str) -> float | None:
    """The epoch seconds of an event's `at`, found in its JSON (as runlane_event_json renders
    it: `"at" : "…"`, before `data`) without parsing all of it."""
    key = event.find('"at"')
    start = event.find('"', key + 4) + 1
    end = event.find('"', start)
    if key < 0 or start <= 0 or end < 0:
        return None
    try:
        return datetime.fromisoformat(event[start:end]).timestamp()
    except ValueError:
        return None


class _Once(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _start_timer() -> None:
    g.started_at = time.perf_counter()
