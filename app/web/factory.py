"""The HTTP API's application factory (the request accessors are in app.web.current)."""

from __future__ import annotations

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from werkzeug.routing import BaseConverter

from app import logs
from app.config import Settings
from app.observability import tracing
from app.services import Services
from app.timings import TaskDurations
from app.waiting import ServedQueues
from app.web import errors, scoped
from app.web.current import needs_relay_nudge, services
from app.web.idempotency import IdempotencyStore
from app.web.metrics import Metrics
from app.web.schemas import MAX_BODY_BYTES

WEB_POOL_SIZE = 20  # per web process; embedded Postgres allows 100 connections in all
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "traceparent",
]
CORS_RESPONSE_HEADERS = ["Idempotent-Replayed", "Location", "Retry-After"]


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """The Flask app. Without arguments (gunicorn's `app.web:create_app()`) it is the entry
    point: it reads the environment and configures logging."""
    from app.web import (
        bulk_api,
        ops,
        queues_api,
        runs_api,
        schedules_api,
        tails,
        tokens_api,
        ui,
        webhooks_api,
        workers_api,
    )

    if services is None:
        if settings is None:
            logs.configure()
            settings = Settings.from_env()
        services = Services.build(settings, pool_size=WEB_POOL_SIZE, name="runlane-web")
    app = Flask("runlane")
    app.url_map.converters["run_id"] = RunIdConverter
    app.json = _Json(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["runlane"] = services
    app.extensions["runlane.idempotency"] = IdempotencyStore(
        services.redis, services.keys, services.settings.idempotency_ttl_seconds
    )
    app.extensions["runlane.served"] = ServedQueues(services.redis, services.keys)
    app.extensions["runlane.durations"] = TaskDurations(services.pool)
    app.extensions["runlane.token_key"] = scoped.key_of(
        services.settings.token_secret, services.settings.api_tokens
    )
    metrics = Metrics(services.settings.metrics_dir)
    app.extensions["runlane.metrics"] = metrics
    metrics.init_app(app)
    errors.register(app)
    blueprints = (
        runs_api.bp, bulk_api.bp, queues_api.bp, schedules_api.bp, workers_api.bp, tokens_api.bp,
        webhooks_api.bp,
        ops.bp, tails.bp, ui.bp,
    )  # fmt: skip
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    tails.init_app(app)
    app.after_request(_nudge_relay)
    if tracing.enabled():  # set up by gunicorn's post_fork, in this worker process
        tracing.instrument_flask(app)
    _allow_origins(app, services.settings.cors_origins)
    return app


def _allow_origins(app: Flask, origins: tuple[str, ...]) -> None:
    """CORS for the API: pages of these origins may call it and open its tails. No
    credentials: a browser sends its token as a header or `?token=`, never a cookie."""
    if not origins:
        return
    CORS(
        app,
        resources=[r"/v1/.*", "/openapi.json"],  # /ui/runlane.js is for any page already
        origins="*" if "*" in origins else list(origins),
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_RESPONSE_HEADERS,
        supports_credentials=False,
        max_age=600,
    )


def _nudge_relay(response: Response) -> Response:
    """A write that went through may have committed events (a cancel, a retry): wake the relay,
    unless the view's own writes did (current.relay_nudged)."""
    if request.method not in _READS and response.status_code < 400 and needs_relay_nudge():
        services().nudge_relay()
    return response


class RunIdConverter(BaseConverter):
    """A run id in a path: any segment (one that is no uuid is a 404 naming it) but `batch`,
    `cancel` and `retry`, so that /v1/runs/batch and the bulk /v1/runs/cancel and /retry, POST
    only, are not also GET /v1/runs/{id} (a GET of them is 405, naming POST in Allow)."""

    regex = r"(?!(?:batch|cancel|retry)(?:/|$))[^/]+"


class _Json(DefaultJSONProvider):
    # Fields in the order the contract lists them, as POST /v1/runs (and its replays) sends them.
    sort_keys = False
