"""One trace across processes: a POST to the web (gunicorn), the attempt in a real `rq worker`
and the task's own span inside it, and the relay's publish linked to it, each exported by the
real OTLP/HTTP exporter to a receiver of the test's own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import auth
from tests.e2e.api import status_is
from tests.helpers import Stack, wait_for
from tests.tails import Tail, assert_complete

pytestmark = pytest.mark.e2e

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


class Receiver:
    """An OTLP/HTTP trace receiver: every span exported to it, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    with self.lock:
                        self.spans.append(_span(attributes["service.name"], span))

    def named(self, name: str) -> Callable[[], list[dict[str, Any]]]:
        def found() -> list[dict[str, Any]]:
            with self.lock:
                return [s for s in self.spans if s["name"] == name]

        return found


def _span(service: str, span: Any) -> dict[str, Any]:
    def value(v: Any) -> Any:
        return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None

    return {
        "service": service,
        "name": span.name,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent": span.parent_span_id.hex() or None,
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "attributes": {a.key: value(a.value) for a in span.attributes},
        "links": [
            (link.trace_id.hex(), {a.key: value(a.value) for a in link.attributes})
            for link in span.links
        ],
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


def test_one_trace_from_the_post_through_the_worker_to_the_tasks_span(
    stack_factory: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = stack_factory(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # the SDK's own: export every 100 ms, not 5 s
        RUNLANE_TASK_MODULES="tests.tasks",
        WEB_CONCURRENCY="1",
    )
    stack.run_release()
    for name in ("web", "worker", "relay"):
        stack.start(name)
    stack.wait_ready()
    headers = {**auth(), "traceparent": TRACEPARENT}
    body = {"task": "tests.traced", "input": {"span": True, "tag": "e2e"}}
    response = requests.post(f"{stack.base}/v1/runs", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    run = response.json()
    done = wait_for(status_is(stack, run["id"], "succeeded"), 20, message="the run to succeed")
    assert done["result"] == {"trace_id": TRACE_ID}  # ctx.trace_id, in the worker process

    (own,) = wait_for(receiver.named("tests.traced.work"), 15, message="the task's span")
    (attempt,) = wait_for(receiver.named("runlane.attempt"), 15, message="the attempt span")
    (claim,) = wait_for(receiver.named("runlane.claim"), 15, message="the claim span")
    (commit,) = wait_for(receiver.named("runlane.commit"), 15, message="the commit span")
    (server,) = wait_for(
        lambda: [s for s in receiver.spans if s["service"] == "runlane-web" and s["parent"]],
        15,
        message="the web's span",
    )
    (publish, *_) = wait_for(
        lambda: [s for s in receiver.named("runlane.relay.publish")() if s["links"]],
        15,
        message="the relay's linked publish",
    )

    assert {s["trace_id"] for s in (server, attempt, claim, commit, own)} == {TRACE_ID}
    assert server["parent"] == CALLER_SPAN
    assert attempt["parent"] == server["span_id"]
    assert claim["parent"] == commit["parent"] == own["parent"] == attempt["span_id"]
    assert claim["end"] <= own["start"] <= own["end"] <= commit["start"]
    assert (server["service"], attempt["service"], publish["service"]) == (
        "runlane-web",
        "runlane-worker",
        "runlane-relay",
    )
    assert attempt["attributes"] == {
        "runlane.worker": attempt["attributes"]["runlane.worker"],
        "runlane.attempt": 1,
        "runlane.run_id": run["id"],
        "runlane.queue": "default",
        "runlane.task": "tests.traced",
        "runlane.outcome": "succeeded",
    }
    assert attempt["attributes"]["runlane.worker"]  # RQ's worker name
    assert own["attributes"] == {"tests.input": "e2e"}
    assert publish["trace_id"] != TRACE_ID  # a batch of many runs' events: linked, not a child
    assert (TRACE_ID, {"runlane.run_id": run["id"]}) in publish["links"]
    # the instrumented web still serves a WebSocket tail (history, then the close)
    tail = Tail(stack.base, run["id"]).start()
    assert_complete(tail.wait_terminal(15))
    assert tail.close_codes == [1000]
