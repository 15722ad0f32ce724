"""The webhooks process's metrics: deliveries by outcome and the delivery lag, registered and
served as every non-web process's are (app.observability.metrics: the shared folder under
`runlane dev`, else a registry of its own on RUNLANE_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.observability.metrics import Registry

OUTCOMES = ("succeeded", "failed_attempt", "failed")
# From the event's commit to a 2xx answer: tens of milliseconds when all is well, hours when an
# endpoint was down and the retries caught up.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)


class WebhookMetrics:
    """Labelled by outcome only: never by tenant or endpoint, whose number has no bound."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "runlane_webhook_deliveries",
            "Webhook delivery attempts by outcome: succeeded (2xx), failed_attempt (to be "
            "retried), failed (retries spent, given up)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.deliveries.labels(outcome)
        self.lag = Histogram(
            "runlane_webhook_delivery_lag_seconds",
            "Seconds from an event's commit to its endpoint's 2xx answer",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
