"""Tracing in one process (real Redis and Postgres): the traceparent a submit stores, the attempt
spans of a worker's executor, the relay's links, the trace id in tasks' contexts and in logs;
and, with tracing off, that none of OpenTelemetry is imported on the way."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from redis import Redis

from app import logs, runs, webhooks
from app.config import Settings
from app.observability import tracing
from app.services import Services
from app.web import create_app
from tests.conftest import auth
from tests.helpers import ROOT, wait_for
from tests.webhook_receiver import receiver
from workers import relay
from workers.execute import Executor
from workers.webhook_metrics import WebhookMetrics
from workers.webhooks import Deliverer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
MALFORMED = [
    "garbage",
    f"00-{TRACE_ID}-00f067aa0ba902b7",  # no flags
    f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # upper case is not allowed
    f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is invalid
    f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
    f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
    "00-" + "a" * 600,
    "\u00e9t\u00e9",
]


@pytest.fixture(scope="session")
def memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    """One provider for the session: OpenTelemetry lets a process set its global one once."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def traced(memory: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, its spans in memory."""
    provider, exporter = memory
    exporter.clear()
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    exporter.clear()


@pytest.fixture
def traced_services(settings: Settings, redis: Redis) -> Iterator[Services]:
    svc = Services.build(dataclasses.replace(settings, task_modules=("tests.tasks",)), pool_size=4)
    yield svc
    svc.close()


def stored_traceparents(services: Services, run_ids: list[str]) -> list[str | None]:
    with services.pool.connection() as conn:
        return [runs.load_run(conn, run_id).traceparent for run_id in run_ids]  # type: ignore[union-attr]


def post(client: FlaskClient, path: str, body: Any, traceparent: str | None) -> Any:
    headers = {**auth(), **({"traceparent": traceparent} if traceparent is not None else {})}
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def run_attempt(services: Services, run_id: str, worker: str = "w-traced") -> dict[str, Any]:
    """One attempt as the worker's loop makes it: claimed, run, its outcome committed."""
    executor = Executor(services, worker)
    try:
        (attempt,) = executor.commit([], [run_id])
        executor.commit([executor.run(attempt)], [])
    finally:
        executor.close()
    with services.pool.connection() as conn:
        found = runs.load_run(conn, run_id)
    assert found is not None and found.status.value == "succeeded", found
    return found.result  # type: ignore[no-any-return]


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_traceparent_is_ignored(traced_services: Services, header: str) -> None:
    client = create_app(services=traced_services).test_client()

    run = post(client, "/v1/runs", {"task": "demo.echo"}, header)

    assert stored_traceparents(traced_services, [run["id"]]) == [None]
    assert "traceparent" not in run and "trace_id" not in run  # the contract's run object


def test_a_valid_traceparent_is_stored_for_a_run_a_flow_and_a_batch(
    traced_services: Services,
) -> None:
    client = create_app(services=traced_services).test_client()
    flow = {"task": "demo.collect", "children": [{"task": "demo.echo"}, {"task": "demo.noop"}]}

    one = post(client, "/v1/runs", {"task": "demo.echo"}, HEADER)
    parent = post(client, "/v1/runs", flow, HEADER)
    batch = post(client, "/v1/runs/batch", {"runs": [{"task": "demo.echo"}, flow]}, HEADER)
    plain = post(client, "/v1/runs/batch", {"runs": [{"task": "demo.echo"}]}, None)

    with traced_services.pool.connection() as conn:
        children = [c["id"] for c in conn.execute(
            "SELECT id::text FROM runs WHERE parent_id IS NOT NULL"
        ).fetchall()]  # fmt: skip
    ids = [one["id"], parent["id"], *[r["id"] for r in batch["items"]], *children]
    assert len(children) == 4
    assert stored_traceparents(traced_services, ids) == [HEADER] * len(ids)
    assert stored_traceparents(traced_services, [plain["items"][0]["id"]]) == [None]


def test_tracing_off_imports_nothing_and_tasks_still_get_the_trace_id(
    settings: Settings, redis: Redis
) -> None:
    """In a fresh interpreter: the web's submit and the worker's attempt, tracing off, import
    nothing of OpenTelemetry and set no tracer provider; ctx.trace_id and the task's log lines
    come from the traceparent. (redis-py 8 imports parts of OpenTelemetry's API and metrics SDK
    itself when they are installed, for its own optional metrics: those are the baseline.)"""
    script = f"""
import dataclasses, json, logging, sys
import redis
baseline = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
from app import logs
from app.config import Settings
from app.observability import tracing
from app.services import Services
from app.web import create_app
from workers.execute import Executor
settings = dataclasses.replace(Settings(**json.loads(sys.argv[1])), task_modules=("tests.tasks",))
assert not settings.tracing and not tracing.setup(settings, "runlane-worker")
lines = []
handler = logging.Handler()
handler.emit = lambda record: lines.append(logs.JsonFormatter().format(record))
logging.getLogger("tests.traced").addHandler(handler)
services = Services.build(settings, pool_size=2)
client = create_app(services=services).test_client()
headers = {{"Authorization": "Bearer tok-alpha", "traceparent": {HEADER!r}}}
run = client.post("/v1/runs", json={{"task": "tests.traced"}}, headers=headers).get_json()
executor = Executor(services, "w-off")
(attempt,) = executor.commit([], [run["id"]])
outcome = executor.run(attempt)
executor.commit([outcome], [])
print(json.dumps({{
    "result": outcome.change.params["result"].obj,
    "logged": [json.loads(line) for line in lines],
    "baseline": baseline,
    "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "provider": repr(getattr(sys.modules.get("opentelemetry.trace"), "_TRACER_PROVIDER", None)),
}}))
"""
    fields = {
        "redis_url": settings.redis_url,
        "database_url": settings.database_url,
        "api_tokens": dict(settings.api_tokens),
        "dev_mode": False,
        "prefix": settings.prefix,
        "home": str(settings.home),
    }
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no OTEL_* variable
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(fields)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["modules"] == out["baseline"]
    assert not [
        m
        for m in out["modules"]
        if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.instrumentation"))
    ]
    assert out["provider"] == "None"
    assert out["result"] == {"trace_id": TRACE_ID}
    assert [line.get("trace_id") for line in out["logged"]] == [TRACE_ID]


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_one_trace_from_the_submit_through_the_attempt_to_the_tasks_span(
    traced: InMemorySpanExporter, traced_services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(services=traced_services).test_client()
    run = post(client, "/v1/runs", {"task": "tests.traced", "input": {"span": True}}, HEADER)
    lines: list[dict[str, Any]] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(json.loads(logs.JsonFormatter().format(record)))  # type: ignore[method-assign]
    logging.getLogger("tests.traced").addHandler(handler)
    try:
        result = run_attempt(traced_services, run["id"])
    finally:
        logging.getLogger("tests.traced").removeHandler(handler)

    spans = spans_by_name(traced)
    (server,) = [s for s in traced.get_finished_spans() if s.kind.name == "SERVER"]
    (attempt,), (claim,), (commit,) = (
        spans["runlane.attempt"],
        spans["runlane.claim"],
        spans["runlane.commit"],
    )
    (own,) = spans["tests.traced.work"]
    assert {f"{s.context.trace_id:032x}" for s in (server, attempt, claim, commit, own)} == {
        TRACE_ID
    }
    assert server.parent is not None and f"{server.parent.span_id:016x}" == HEADER[36:52]
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    for child in (claim, commit, own):
        assert child.parent is not None and child.parent.span_id == attempt.context.span_id
    assert attempt.start_time == claim.start_time and attempt.end_time == commit.end_time
    assert claim.end_time <= own.start_time and own.end_time <= commit.start_time
    assert dict(attempt.attributes or {}) == {
        "runlane.worker": "w-traced",
        "runlane.attempt": 1,
        "runlane.run_id": run["id"],
        "runlane.queue": "default",
        "runlane.task": "tests.traced",
        "runlane.outcome": "succeeded",
    }
    assert result == {"trace_id": TRACE_ID}  # ctx.trace_id
    assert [line.get("trace_id") for line in lines] == [TRACE_ID]
    # the web's traceparent is its own span's: the attempt continues it, not the header's
    stored = stored_traceparents(traced_services, [run["id"]])[0]
    assert stored == f"00-{TRACE_ID}-{server.context.span_id:016x}-01"


def test_a_run_without_a_traceparent_gets_a_trace_of_its_own(
    traced: InMemorySpanExporter, traced_services: Services
) -> None:
    """Tracing on, the web's span is the trace's root; with tracing off in the worker too a run
    submitted without one has no trace (ctx.trace_id None: the test above runs it off)."""
    client = create_app(services=traced_services).test_client()
    run = post(client, "/v1/runs", {"task": "tests.traced"}, None)

    result = run_attempt(traced_services, run["id"])

    (attempt,) = spans_by_name(traced)["runlane.attempt"]
    assert result == {"trace_id": f"{attempt.context.trace_id:032x}"}


def test_a_failed_attempt_says_so(traced: InMemorySpanExporter, traced_services: Services) -> None:
    client = create_app(services=traced_services).test_client()
    run = post(client, "/v1/runs", {"task": "demo.fail", "input": {"times": 1}}, HEADER)
    executor = Executor(traced_services, "w-fails")
    try:
        (attempt,) = executor.commit([], [run["id"]])
        executor.commit([executor.run(attempt)], [])
    finally:
        executor.close()

    (span,) = spans_by_name(traced)["runlane.attempt"]
    assert (span.attributes or {})["runlane.outcome"] == "failed"
    assert span.status.status_code.name == "ERROR"


def test_the_relays_publish_is_linked_to_each_runs_trace(
    traced: InMemorySpanExporter, traced_services: Services
) -> None:
    client = create_app(services=traced_services).test_client()
    other = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    runs_made = [post(client, "/v1/runs", {"task": "demo.echo"}, tp) for tp in (HEADER, other)]
    # tracing on, a run submitted without a traceparent joins the web's own trace
    runs_made.append(post(client, "/v1/runs", {"task": "demo.echo"}, None))
    stored = stored_traceparents(traced_services, [r["id"] for r in runs_made])

    svc = traced_services
    rel = relay.Relay(svc.settings.database_url or "", svc.redis, svc.keys, 3600)
    with svc.pool.connection() as conn:
        rel.ensure_epoch(conn)  # as a relay that has published before: one try, one span
        assert rel.publish_batch(conn) == 3

    (publish,) = spans_by_name(traced)["runlane.relay.publish"]
    linked = {
        (link.attributes or {})["runlane.run_id"]: (
            f"00-{link.context.trace_id:032x}-{link.context.span_id:016x}-"
            f"{link.context.trace_flags:02x}"
        )
        for link in publish.links
    }
    assert linked == {r["id"]: tp for r, tp in zip(runs_made, stored, strict=True)}
    assert stored[0] is not None and stored[0][3:35] == TRACE_ID
    assert (publish.attributes or {})["runlane.events"] == 3


def test_link_to_is_none_while_tracing_is_off() -> None:
    assert tracing.link_to(HEADER) is None


def test_a_webhook_delivery_is_linked_to_its_runs_trace(
    traced: InMemorySpanExporter, traced_services: Services
) -> None:
    svc = traced_services
    client = create_app(services=svc).test_client()
    settings = dataclasses.replace(svc.settings, webhooks_allow_private=True)
    with receiver() as hook, svc.pool.connection() as conn:
        made = webhooks.create(conn, webhooks.NewEndpoint("alpha", hook.url, ["run.queued"], None))
        hook.secret = made.secret
        run = post(client, "/v1/runs", {"task": "demo.echo"}, HEADER)
        rel = relay.Relay(svc.settings.database_url or "", svc.redis, svc.keys, 3600)
        rel.ensure_epoch(conn)
        rel.publish_batch(conn)  # numbered: now the webhooks fan it out
        deliverer = Deliverer(
            svc.settings.database_url or "", settings, WebhookMetrics(CollectorRegistry())
        )
        try:
            wait_for(lambda: deliverer.step() or hook.unique(), 10, message="the delivery")
            wait_for(lambda: hook.unique(), 10, message="the receiver to get it")
            deliverer.close()
        finally:
            deliverer.sender.close()
    (span,) = spans_by_name(traced)["runlane.webhook.deliver"]
    (link,) = span.links
    assert f"{link.context.trace_id:032x}" == TRACE_ID
    assert (link.attributes or {})["runlane.run_id"] == run["id"]
    assert (span.attributes or {})["runlane.webhook.ok"] is True
    assert (span.attributes or {})["http.response.status_code"] == 200
