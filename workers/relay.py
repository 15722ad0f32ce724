"""The outbox relay: publishes committed events from Postgres to Redis Streams, one relay at a time.

Each event goes to its run's stream (entry ID = seq) and its tenant's stream (entry ID = tseq).
Explicit IDs make publishing idempotent: Redis refuses an ID that is not above the stream's top,
so a relay that dies between XADD and recording its place (tenant_streams.published_tseq)
repeats nothing on restart. Event rows are written once by their commit and numbered once here.
"""

from __future__ import annotations

import functools
import hashlib
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from redis import Redis
from redis.exceptions import NoScriptError, RedisError

from app import db, logs
from app.config import Settings
from app.domain import TERMINAL_EVENTS
from app.observability import metrics, tracing
from app.observability.metrics import RelayMetrics
from app.redis_keys import PUBLISH_EVENTS, RUN_STREAM_MAXLEN, TENANT_STREAM_MAXLEN, Keys
from app.services import primary_lost

log = logs.get("runlane.relay")

RELAY_LOCK = 72_616_102  # advisory lock key: whoever holds it is the active relay
BATCH_LIMIT = 2000
# An idle relay blocks on a Redis list that committing processes push to (app.relay_nudge), and
# polls Postgres this often when nothing nudges it: a process that died between its commit and
# its nudge, or a writer that does not nudge. LISTEN/NOTIFY would need no Redis but serialises
# every writer's commit on a global lock.
FALLBACK_POLL_SECONDS = 0.25
STANDBY_SECONDS = 1.0
ERROR_BACKOFF_SECONDS = 1.0
# After Redis lost its data, runs that ended this recently get their streams back too.
REBUILD_RECENT_SECONDS = 3600
REBUILD_PAGE = 5000

PUBLISH_EVENTS_SHA = hashlib.sha1(PUBLISH_EVENTS.encode()).hexdigest()

Conn = psycopg.Connection[Any]


class EpochLost(Exception):
    """Redis has lost its data (the epoch key is gone): nothing of the batch was written."""


def main(settings: Settings) -> None:
    """The `relay` process: publish until SIGTERM or SIGINT."""
    redis_url, database_url = settings.require_urls()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    redis = Redis.from_url(redis_url, health_check_interval=30)
    registry = metrics.registry_for(settings)
    server = metrics.serve(settings, registry)
    observed = RelayMetrics(registry)
    observed.recorder.start()
    relay = Relay(
        database_url, redis, Keys(settings.prefix), settings.run_retention_days * 86400,
        metrics=observed,
    )  # fmt: skip
    tracing.setup(settings, "runlane-relay")
    try:
        relay.run(stop)
    finally:
        redis.close()
        observed.recorder.stop()
        if server is not None:
            server.close()
        tracing.shutdown()
    log.info("relay.stopped")


class Relay:
    def __init__(
        self,
        database_url: str,
        redis: Redis,
        keys: Keys,
        retention_s: int,
        *,
        batch_limit: int = BATCH_LIMIT,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.database_url = database_url
        self.metrics = metrics
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s
        self.batch_limit = batch_limit
        self.active = threading.Event()  # set while this relay holds the lock (tests watch it)
        self._last_nudge: bytes | str = "0-0"

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._serve(stop)
            except (psycopg.Error, RedisError) as exc:
                log.warning("relay.error", extra={"error": repr(exc)})
                if primary_lost(exc):  # the address leads to a replica now: connect afresh
                    self.redis.connection_pool.disconnect()
                stop.wait(ERROR_BACKOFF_SECONDS)
            finally:
                self.active.clear()

    def _serve(self, stop: threading.Event) -> None:
        # The lock lives as long as this session, so a relay that dies (or loses its connection)
        # lets a standby take over at its next try.
        with db.connect(self.database_url, application_name="runlane-relay") as conn:
            while not try_lock(conn):
                if stop.wait(STANDBY_SECONDS):
                    return
            self.active.set()
            log.info("relay.active")
            with Marker(self.database_url) as marker:
                while not stop.is_set():
                    published = self.publish_batch(conn, marker)
                    if published >= self.batch_limit:
                        continue  # there may be more
                    if published == 0:  # a publish checks the epoch itself; idle, look here
                        self.ensure_epoch(conn)
                    # Events committed after this batch was taken nudged after their commit,
                    # so the wait returns at once for them: no second, empty take.
                    self.wait_for_nudge()

    def wait_for_nudge(self, timeout: float = FALLBACK_POLL_SECONDS) -> None:
        """Until a commit nudges us or the fallback poll is due. Nudges that came while we
        published wake us at once: every nudge is appended after its commit, and we read the
        stream from the last nudge we saw, so none is missed."""
        found: list[Any] = self.redis.xread(  # type: ignore[assignment]
            {self.keys.relay_nudge: self._last_nudge}, count=1, block=int(timeout * 1000)
        )
        if found:  # [[stream, [(entry id, fields)]]]
            self._last_nudge = found[0][1][-1][0]

    def publish_batch(self, conn: Conn, marker: Marker | None = None) -> int:
        """Take, publish and mark one batch; with a marker, the marking overlaps the next batch."""
        events = take_batch(conn, self.batch_limit, skip=marker.pending if marker else [])
        if events:
            send = functools.partial(publish_traced, conn) if tracing.enabled() else publish
            try:
                send(self.redis, self.keys, events, self.retention_s, guard=True)
            except EpochLost:
                self.ensure_epoch(conn)
                send(self.redis, self.keys, events, self.retention_s, guard=True)
            if self.metrics is not None:
                self.metrics.published(events, time.time())
        if marker is not None:
            marker.wait()
            if events:
                marker.submit(events)
        elif events:
            mark_published(conn, events)
        return len(events)

    def ensure_epoch(self, conn: Conn) -> None:
        """Redis without our epoch key has lost its data: put back what live tails may read."""
        if self.redis.exists(self.keys.epoch):
            return
        count = rebuild_streams(conn, self.redis, self.keys, self.retention_s)
        self.redis.set(self.keys.epoch, f"{time.time():.3f}:{uuid.uuid4().hex[:8]}")
        log.info("relay.rebuilt", extra={"events": count})


def try_lock(conn: Conn) -> bool:
    row = conn.execute(db.q("relay_try_lock"), {"key": RELAY_LOCK}).fetchone()
    return bool(row and row["locked"])


class Outgoing(NamedTuple):
    """An outbox row on its way to Redis, its event already rendered as JSON."""

    id: int
    run_id: str
    seq: int
    type: str
    tenant: str
    queue: str
    tseq: int
    event: str
    at: datetime  # its commit (the row's clock_timestamp), for the relay's lag

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Outgoing:
        return cls(
            row["id"], str(row["run_id"]), row["seq"], row["type"], row["tenant"], row["queue"],
            row["tseq"] or 0, row["event"], row["at"],
        )  # fmt: skip


def take_batch(
    conn: Conn, limit: int = BATCH_LIMIT, skip: list[int] | None = None
) -> list[Outgoing]:
    """The oldest unpublished events, each with its tseq, in one statement; `skip` holds the ids
    of a batch already published whose marking is still under way."""
    rows = conn.execute(db.q("relay_take_batch"), {"limit": limit, "skip": skip or []}).fetchall()
    return [Outgoing.from_row(row) for row in rows]


class Marker:
    """Marks published batches on a connection and thread of its own, so that marking one batch
    overlaps taking and publishing the next (ordering needs only the XADDs to be in sequence)."""

    def __init__(self, database_url: str) -> None:
        self.conn = db.connect(database_url, application_name="runlane-relay-marker")
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="relay-marker")
        self.pending: list[int] = []
        self._future: Future[None] | None = None

    def submit(self, events: list[Outgoing]) -> None:
        self.pending = [e.id for e in events]
        self._future = self.executor.submit(mark_published, self.conn, events)

    def wait(self) -> None:
        if self._future is not None:
            future, self._future = self._future, None
            future.result()
        self.pending = []

    def __enter__(self) -> Marker:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self.executor.shutdown(wait=True)
            self.conn.close()


def mark_published(conn: Conn, events: list[Outgoing]) -> None:
    """Move each tenant's place to the batch's highest tseq: a batch holds, per tenant, the next
    tseqs after the place (or after the batch marked before it), so none is passed unsent."""
    top: dict[str, int] = {}
    for e in events:
        top[e.tenant] = max(e.tseq, top.get(e.tenant, 0))
    conn.execute(db.q("relay_mark_published"), {"tenants": list(top), "tseqs": list(top.values())})


def backlog(conn: Conn, run_id: str | None = None) -> int:
    """Events not yet known to be in Redis (of one run, or all)."""
    row = conn.execute(db.q("relay_backlog"), {"run_id": run_id}).fetchone()
    return int(row["n"]) if row else 0


def publish(
    redis: Redis, keys: Keys, events: list[Outgoing], retention_s: int, *, guard: bool = False
) -> int:
    """Append each event to its run and tenant streams: one script call, sent by SHA, so one
    round trip; events already there are skipped. Returns how many entries were new. `guard`:
    raise EpochLost, writing nothing, if Redis has lost its data since the epoch was set."""
    # tseq order per tenant is also seq order per run: tseqs are given in outbox id order
    ordered = sorted(events, key=lambda e: (e.tenant, e.tseq))
    tenants = {tenant: i for i, tenant in enumerate(dict.fromkeys(e.tenant for e in ordered), 1)}
    args: list[Any] = [len(ordered), RUN_STREAM_MAXLEN, TENANT_STREAM_MAXLEN, int(guard)]
    for e in ordered:
        args.append(f"{e.seq} {e.tseq} {tenants[e.tenant]} {e.type} {e.queue}")
        args.append(e.event)
    stream_keys = [keys.run_stream(e.run_id) for e in ordered]
    stream_keys += [keys.tenant_stream(tenant) for tenant in tenants]
    if guard:
        stream_keys.append(keys.epoch)
    ended = {e.run_id for e in events if e.type in TERMINAL_EVENTS}
    for loaded in (False, True):
        pipe = redis.pipeline(transaction=False)
        pipe.evalsha(PUBLISH_EVENTS_SHA, len(stream_keys), *stream_keys, *args)
        for run_id in ended:
            pipe.expire(keys.run_stream(run_id), retention_s)
        for tenant in tenants:
            pipe.expire(keys.tenant_stream(tenant), retention_s)
        try:
            added = int(pipe.execute()[0])
            break
        except NoScriptError:  # Redis forgot the script; the EXPIREs again are harmless
            if loaded:
                raise
            redis.script_load(PUBLISH_EVENTS)
    if added < 0:
        raise EpochLost
    return added


def publish_traced(
    conn: Conn,
    redis: Redis,
    keys: Keys,
    events: list[Outgoing],
    retention_s: int,
    *,
    guard: bool = False,
) -> int:
    """publish, in a span linked to the trace of each run it publishes for (a batch holds
    many runs' events, so it belongs to none of their traces)."""
    from opentelemetry.trace import SpanKind

    run_ids = list({uuid.UUID(e.run_id) for e in events})
    rows = conn.execute(db.q("relay_traceparents"), {"ids": run_ids}).fetchall()
    links = [
        link
        for row in rows
        if (link := tracing.link_to(row["traceparent"], **{"runlane.run_id": str(row["id"])}))
    ]
    attributes = {"runlane.events": len(events), "runlane.runs": len(run_ids)}
    name, kind = "runlane.relay.publish", SpanKind.PRODUCER
    with tracing.tracer().start_as_current_span(
        name, kind=kind, links=links, attributes=attributes
    ):
        return publish(redis, keys, events, retention_s, guard=guard)


def rebuild_streams(conn: Conn, redis: Redis, keys: Keys, retention_s: int) -> int:
    """Republish the published events of live and recently ended runs, page by page."""
    after_id, count = 0, 0
    while True:
        rows = conn.execute(
            db.q("relay_recent_events"),
            {"after_id": after_id, "recent_s": REBUILD_RECENT_SECONDS, "limit": REBUILD_PAGE},
        ).fetchall()
        if not rows:
            return count
        publish(redis, keys, [Outgoing.from_row(row) for row in rows], retention_s)
        after_id = rows[-1]["id"]
        count += len(rows)
