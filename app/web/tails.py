"""Live tails of runs: WebSocket and Server-Sent Events over the relay's Redis Streams.

Every check (token, run, cursor) is answered before the WebSocket upgrade, as a problem+json
response, in that order; a plain GET that passes them gets 426. After the upgrade, each tail
follows its stream through the process's one stream reader (app.web.streams), which fills from
Postgres whatever Redis does not bring.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_sock import Sock

from app import runs
from app.domain import Run
from app.web import streams
from app.web.auth import identify, permit, request_token, scoped_queue
from app.web.current import metrics, services
from app.web.errors import ApiError, problem
from app.web.metrics import Metrics
from app.web.openapi import RUN_ID, documented, websocket_twin
from app.web.responses import EventOut, TailMessage
from app.web.schemas import RunTailQuery, TenantTailQuery
from app.web.streams import Entry, StreamHub

bp = Blueprint("tails", __name__)

PING_SECONDS = 20  # WebSocket keep-alive pings, sent by the socket's own thread
SSE_HEARTBEAT_SECONDS = 10
MAX_NUMBER = 2**62
_hub_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Registers the WebSocket routes (flask-sock) on a blueprint of their own."""
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"ping_interval": PING_SECONDS})
    ws = Blueprint("tails_ws", __name__)
    ws.before_request(_check_before_upgrade)
    sock = Sock()
    sock.route("/v1/runs/<run_id:run_id>/tail", bp=ws)(run_tail)
    sock.route("/v1/tail", bp=ws)(tenant_tail)
    # flask-sock's rules match WebSocket requests only: without these plain-HTTP twins, routing
    # would refuse a plain GET (400) before the token and run checks above could answer.
    ws.add_url_rule("/v1/runs/<run_id:run_id>/tail", "run_tail_http", upgrade_required)
    ws.add_url_rule("/v1/tail", "tenant_tail_http", upgrade_required)
    app.register_blueprint(ws)
    sock.init_app(app)
    app.extensions["runlane.sock"] = sock


def hub() -> StreamHub:
    """This process's stream reader, made on first use (after a forking server forked)."""
    extensions = current_app.extensions
    with _hub_lock:
        found: StreamHub | None = extensions.get("runlane.streams")
        if found is None:
            svc = services()
            redis_url, _ = svc.settings.require_urls()
            found = StreamHub.from_url(redis_url, svc.keys)
            extensions["runlane.streams"] = found
    return found


# --- before the upgrade -----------------------------------------------------------------------


def _check_before_upgrade() -> Response | None:
    """Answer 401, 404, then 400 as problem+json while it is still HTTP; stash what the tail
    needs."""
    if request.method == "OPTIONS":
        return None  # a CORS preflight: no token, nothing to check
    try:
        g.tail_tenant, g.scope = identify(request_token(query=True))
        if request.view_args and "run_id" in request.view_args:
            with services().pool.connection() as conn:
                run = runs.get_run(conn, g.tail_tenant, request.view_args["run_id"])
            g.tail_run = permit(run)
            g.tail_after = _number("after", request.args.get("after"), default=0)
        else:
            g.tail_queue = scoped_queue(request.args.get("queue") or None)
            cursor = request.args.get("cursor")
            g.tail_top = streams.tenant_top(services().pool, g.tail_tenant)
            g.tail_cursor = _number("cursor", cursor, default=g.tail_top)
            if g.tail_cursor > g.tail_top:
                raise _bad("cursor", "is not a cursor of this tenant's stream")
    except ApiError as exc:
        return problem(exc.status, exc.detail, slug=exc.slug, headers=exc.headers)
    except runs.RunNotFound:
        return problem(404, "no such run", slug="run-not-found")
    return None


@websocket_twin
def upgrade_required(**_: str) -> Response:
    """A plain GET of a tail that passed every check: it must be a WebSocket (RFC 9110 426)."""
    return problem(
        426,
        "this is a WebSocket route: connect with Upgrade: websocket",
        slug="upgrade-required",
        headers={"Upgrade": "websocket"},
    )


def _number(name: str, raw: str | None, *, default: int) -> int:
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not text.isdigit() or int(text) > MAX_NUMBER:
        raise _bad(name, "must be a non-negative integer")
    return int(text)


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"invalid {field}: {message}", slug="validation")


# --- after the upgrade ------------------------------------------------------------------------


@documented(
    "Tail a run's events (WebSocket; token also accepted as ?token=)",
    path=[RUN_ID],
    query=RunTailQuery,
    websocket=EventOut,
    token_query=True,
    responses={404: None},
    tags=["tails"],
    description="Checked in this order, before the upgrade: the token (401), the run (404), the "
    "query (400); a plain GET without `Upgrade: websocket` then gets 426. After the run's terminal "
    "event the server closes with code 1000.",
)
def run_tail(ws: Any, run_id: str) -> None:
    """WebSocket /v1/runs/{id}/tail?after=N: history, then live; close 1000 after the end (at
    once when the run had finished and N is at or past its last event)."""
    follower = _follow(g.tail_run, g.tail_after)
    if _send_all(ws, follower, lambda entry: entry.event, metrics()):
        ws.close(1000, "run finished")


@documented(
    "Tail every event of the tenant's runs (WebSocket; token also accepted as ?token=)",
    query=TenantTailQuery,
    websocket=TailMessage,
    token_query=True,
    responses={},
    tags=["tails"],
    description="Checked in this order, before the upgrade: the token (401), the query (400); a "
    'plain GET without `Upgrade: websocket` then gets 426. A message {"type": "gap"} says that '
    "events after the cursor were trimmed away.",
)
def tenant_tail(ws: Any) -> None:
    """WebSocket /v1/tail?queue=Q&cursor=C: the tenant's events as {"cursor", "event"}."""
    follower = streams.follow_tenant(
        services().pool, hub(), g.tail_tenant,
        after=g.tail_cursor, top=g.tail_top, queue=g.tail_queue,
    )  # fmt: skip
    _send_all(ws, follower, _tenant_message, metrics())


def _tenant_message(entry: Entry) -> str:
    if entry is streams.GAP:
        return entry.event
    return f'{{"cursor": "{entry.number}", "event": {entry.event}}}'


def _send_all(ws: Any, follower: streams.Follower, render: Any, sent: Metrics) -> bool:
    """Sends what the follower yields while the client is there; True if the follower ended."""
    items = iter(follower)
    try:
        for entry in items:
            if not ws.connected:
                return False
            if entry is not None:
                ws.send(render(entry))
                sent.sent(entry, follower.start)
    finally:
        items.close()  # type: ignore[attr-defined]
    return True


# --- Server-Sent Events -----------------------------------------------------------------------


def wants_event_stream() -> bool:
    """Whether GET /v1/runs/{id}/events is asked for as SSE: explicitly, as an EventSource
    does; "*/*" (curl's default) still gets the JSON history."""
    return any(m == "text/event-stream" and q > 0 for m, q in request.accept_mimetypes)


def _follow(run: Run, after: int) -> streams.Follower:
    return streams.follow_run(
        services().pool,
        hub(),
        run.id,
        after=after,
        last_seq=run.last_seq,
        terminal=run.status.terminal,
    )


def sse_response(run: Run, after: int) -> Response:
    """GET /v1/runs/{id}/events as text/event-stream: `id:` seq, `event:` type, history then
    live, ending after the terminal event; comments as heartbeats while idle.

    An EventSource reconnects whenever a stream ends, with Last-Event-ID set to the last id it
    got; only a 204 (or an error status) makes it stop for good. So the stream ends after the
    terminal event, and the reconnect that follows, a finished run with nothing after the
    cursor, gets 204 No Content rather than a stream that would never send anything: without
    it every finished run left open in a browser tab would hold a server thread forever.
    """
    if run.status.terminal and after >= run.last_seq:
        return Response(status=204)
    return Response(
        _sse(_follow(run, after), metrics()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(follower: streams.Follower, sent: Metrics) -> Iterator[str]:
    yield "retry: 1000\n\n"
    idle = 0.0
    for entry in follower:
        if entry is None:
            idle += follower.idle_s
            if idle >= SSE_HEARTBEAT_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"  # also how a closed connection is noticed
            continue
        idle = 0.0
        yield f"id: {entry.number}\nevent: {entry.type}\ndata: {entry.event}\n\n"
        sent.sent(entry, follower.start)  # the server wrote it before asking for the next
