"""Prometheus metrics of the web process, and their exposition.

Under gunicorn several processes serve requests: with PROMETHEUS_MULTIPROC_DIR set (the gunicorn
config sets it before workers start), each process writes its values to files there and /metrics
adds them up across processes.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter as CounterOf
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Every label value comes from a fixed set, whatever clients send: a label value made from
# request input (a made-up method, a random path) would be a new time series per request.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
UNMATCHED = "unmatched"  # every path no route matches (404, and 405s of unknown methods)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The app's metric objects, made per app so that tests can build many apps."""

    def __init__(self) -> None:
        # In multiprocess mode values live in files, so they are registered nowhere; else each app
        # has its own registry (the global one would refuse a second app's metrics).
        self.registry = None if multiprocess_dir() else CollectorRegistry()
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

    def exposition(self, held: list[tuple[str, str, str, int]] | None = None) -> Response:
        """The process's metrics (all processes' under gunicorn), and the gauges read from
        Postgres at this scrape: `held`, app.limits.held_counts (None: it could not be read)."""
        if self.registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        text = generate_latest(registry) + (_held_runs(held) if held is not None else b"")
        return Response(text, content_type=CONTENT_TYPE_LATEST)


_CONVERTER = re.compile(r"<[^:<>]+:([^<>]+)>")  # <run_id:run_id> is labelled <run_id>


def request_labels(status_code: int) -> tuple[str, str, str]:
    """(method, route, status) of the current request, each from a bounded set."""
    method = request.method if request.method in METHODS else OTHER
    # The route template, never the raw path: ids would make label sets unbounded.
    route = _CONVERTER.sub(r"<\1>", request.url_rule.rule) if request.url_rule else UNMATCHED
    status = str(status_code) if 100 <= status_code <= 599 else OTHER
    return method, route, status


def _held_runs(held: list[tuple[str, str, str, int]]) -> bytes:
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
    registry = CollectorRegistry()
    registry.register(_Once(family))
    return generate_latest(registry)


class _Once(Collector):
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


def _start_timer() -> None:
    g.started_at = time.perf_counter()
