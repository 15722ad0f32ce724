"""The `webhooks` process: fans committed events out into deliveries, and makes the deliveries'
attempts in a thread pool, retrying with growing delays. Any number of copies may run: they share
the work through Postgres (SKIP LOCKED, and leases that a killed copy's work outlives), never
through Redis, so an emptied Redis loses nothing."""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from app import db, logs
from app.config import Settings
from app.observability import metrics as observability
from app.observability import tracing
from app.webhooks import message_id
from workers.webhook_http import Outcome, Sender
from workers.webhook_metrics import WebhookMetrics

log = logs.get("runlane.webhooks")
Conn = psycopg.Connection[Any]

THREADS = 32  # attempts in flight per process
PER_ENDPOINT = 4  # of them, at most this many to one endpoint: a slow one holds only its own
# Idle, the process looks for new events and due retries this often (the relay numbers events
# within a few milliseconds of their commit; this is most of the delivery lag).
POLL_SECONDS = 0.1
ERROR_BACKOFF_SECONDS = 1.0
FAN_OUT_TENANTS = 100
FAN_OUT_EVENTS = 1000  # per tenant and batch
# Seconds before each retry (Stripe-like), shortened by up to JITTER at random: more than 24 h
# in all even then, after which the delivery is failed. RUNLANE_WEBHOOKS_RETRY_SCALE scales them.
RETRY_DELAYS_S = (5, 30, 120, 300, 1800, 3600, 7200, 14400, 28800, 28800, 28800)
JITTER = 0.2


def retry_delay(
    attempt: int, scale: float = 1.0, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds from the failure of attempt `attempt` (1, 2, ...) to the next; None: none left."""
    if attempt > len(RETRY_DELAYS_S):
        return None
    return RETRY_DELAYS_S[attempt - 1] * scale * (1 - JITTER * rand())


def main(settings: Settings) -> None:
    """The `webhooks` process: deliver until SIGTERM or SIGINT."""
    _, database_url = settings.require_urls()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    registry = observability.registry_for(settings)
    server = observability.serve(settings, registry)
    deliverer = Deliverer(database_url, settings, WebhookMetrics(registry))
    tracing.setup(settings, "runlane-webhooks")
    log.info("webhooks.started")
    try:
        deliverer.run(stop)
    finally:
        deliverer.close()
        if server is not None:
            server.close()
        tracing.shutdown()
    log.info("webhooks.stopped")


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt, with where it goes and what it sends."""

    id: str
    endpoint_id: str
    url: str
    secret: str
    attempt: int
    event_type: str
    event_at: datetime
    body: str
    run_id: str | None = None  # None: a ping
    traceparent: str | None = None  # the run's trace, which the delivery's span links to

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Claimed:
        return cls(
            str(row["id"]), str(row["endpoint_id"]), row["url"], row["secret"], row["attempts"],
            row["event_type"], row["event_at"], row["body"],
            str(row["run_id"]) if row.get("run_id") else None, row.get("traceparent"),
        )  # fmt: skip


class Deliverer:
    def __init__(
        self,
        database_url: str,
        settings: Settings,
        metrics: WebhookMetrics,
        *,
        threads: int = THREADS,
        per_endpoint: int = PER_ENDPOINT,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.threads = threads
        self.per_endpoint = per_endpoint
        # an attempt takes at most a connect, a write and a read, each within the timeout
        self.lease_s = 3 * settings.webhooks_timeout_seconds + 5
        self.pool = db.make_pool(database_url, max_size=threads + 1, name="runlane-webhooks")
        self.sender = Sender(
            timeout_s=settings.webhooks_timeout_seconds,
            allow_private=settings.webhooks_allow_private,
            max_connections=threads,
        )
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="webhook")
        self.busy: Counter[str] = Counter()  # attempts in flight, per endpoint
        self.lock = threading.Lock()
        self.wake = threading.Event()  # an attempt ended: there is room to claim more

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                worked = self.step()
            except psycopg.Error as exc:
                log.warning("webhooks.error", extra={"error": repr(exc)})
                stop.wait(ERROR_BACKOFF_SECONDS)
                continue
            if not worked:
                self.wake.wait(POLL_SECONDS)
                self.wake.clear()

    def step(self) -> bool:
        """One fan-out batch and one claim; whether either found anything."""
        with self.pool.connection() as conn:
            fanned = fan_out(conn)
            claimed = self.claim(conn)
        for delivery in claimed:
            self.executor.submit(self.attempt, delivery)
        return bool(fanned or claimed)

    def claim(self, conn: Conn) -> list[Claimed]:
        with self.lock:
            busy = dict(self.busy)
        free = self.threads - sum(busy.values())
        if free <= 0:
            return []
        params = {
            "busy_ids": list(busy), "busy_counts": list(busy.values()), "free": free,
            "per_endpoint": self.per_endpoint, "lease_s": self.lease_s,
        }  # fmt: skip
        claimed = [Claimed.from_row(row) for row in conn.execute(db.q("webhooks_claim"), params)]
        with self.lock:
            self.busy.update(delivery.endpoint_id for delivery in claimed)
        return claimed

    def attempt(self, delivery: Claimed) -> None:
        try:
            outcome = self.send(delivery)
            self.record(delivery, outcome)
        except Exception as exc:  # logged; its lease runs out and the attempt is made again
            log.error("webhooks.attempt_error", exc_info=exc, extra={"delivery": delivery.id})
        finally:
            with self.lock:
                self.busy[delivery.endpoint_id] -= 1
                if self.busy[delivery.endpoint_id] <= 0:
                    del self.busy[delivery.endpoint_id]
            self.wake.set()

    def send(self, delivery: Claimed) -> Outcome:
        """One attempt; with tracing on, in a span linked to the run's trace."""
        if not tracing.enabled():
            return self.sender.send(
                delivery.url, delivery.secret, message_id(delivery.id), delivery.body
            )
        from opentelemetry.trace import SpanKind

        link = tracing.link_to(delivery.traceparent, **{"runlane.run_id": delivery.run_id or ""})
        attributes: dict[str, str | int] = {
            "runlane.webhook.endpoint_id": delivery.endpoint_id,
            "runlane.webhook.attempt": delivery.attempt,
            "runlane.event.type": delivery.event_type,
        }
        with tracing.tracer().start_as_current_span(
            "runlane.webhook.deliver", kind=SpanKind.CLIENT, links=[link] if link else [],
            attributes=attributes,
        ) as span:  # fmt: skip
            outcome = self.sender.send(
                delivery.url, delivery.secret, message_id(delivery.id), delivery.body
            )
            span.set_attribute("runlane.webhook.ok", outcome.ok)
            if outcome.status_code is not None:
                span.set_attribute("http.response.status_code", outcome.status_code)
            return outcome

    def record(self, delivery: Claimed, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        delay = (
            None
            if outcome.ok
            else retry_delay(delivery.attempt, self.settings.webhooks_retry_scale)
        )
        if outcome.ok:
            status, label = "succeeded", "succeeded"
        elif delay is None:
            status, label = "failed", "failed"
        else:
            status, label = "pending", "failed_attempt"
        next_at = now + timedelta(seconds=delay) if delay is not None else None
        params = {
            "id": delivery.id, "attempt": delivery.attempt, "status": status,
            "next_attempt_at": next_at, "status_code": outcome.status_code,
            "error": outcome.error, "duration_ms": outcome.duration_ms,
        }  # fmt: skip
        with self.pool.connection() as conn:
            conn.execute(db.q("webhooks_record_attempt"), params)
        self.metrics.deliveries.labels(label).inc()
        if outcome.ok:
            self.metrics.lag.observe(max(0.0, (now - delivery.event_at).total_seconds()))
        elif delay is None:
            log.warning(
                "webhooks.delivery_failed",
                extra={"delivery": delivery.id, "endpoint": delivery.endpoint_id,
                       "error": outcome.error},
            )  # fmt: skip

    def close(self) -> None:
        # Attempts under way finish (each within the timeout) and are recorded; queued ones wait.
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.sender.close()
        self.pool.close()


def fan_out(conn: Conn) -> int:
    """One batch of numbered events past the tenants' cursors into deliveries; events read."""
    params = {"tenants": FAN_OUT_TENANTS, "limit": FAN_OUT_EVENTS}
    row = conn.execute(db.q("webhooks_fan_out"), params).fetchone()
    return int(row["events"]) if row else 0
