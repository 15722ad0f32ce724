"""The outbox relay: publishes committed events from Postgres to Redis Streams, one relay at a time.

Each event goes to its run's stream (entry ID = seq) and its tenant's stream (entry ID = tseq).
Explicit IDs make publishing idempotent: Redis refuses an ID that is not above the stream's top,
so a relay that dies between XADD and marking the rows published repeats nothing on restart.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from typing import Any

import psycopg
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from app import db, logs
from app.config import Settings
from app.domain import Event
from app.redis_keys import RUN_STREAM_MAXLEN, TENANT_STREAM_MAXLEN, Keys, stream_id

log = logs.get("runlane.relay")

RELAY_LOCK = 72_616_102  # advisory lock key: whoever holds it is the active relay
BATCH_LIMIT = 2000
POLL_SECONDS = 1.0  # notifications are lost while disconnected, so look anyway this often
STANDBY_SECONDS = 1.0
ERROR_BACKOFF_SECONDS = 1.0
# After Redis lost its data, runs that ended this recently get their streams back too.
REBUILD_RECENT_SECONDS = 3600
REBUILD_PAGE = 5000
_TOP_REFUSAL = "equal or smaller than the target stream top"

Conn = psycopg.Connection[Any]


def main(settings: Settings) -> None:
    """The `relay` process: publish until SIGTERM or SIGINT."""
    redis_url, database_url = settings.require_urls()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    redis = Redis.from_url(redis_url, health_check_interval=30)
    relay = Relay(database_url, redis, Keys(settings.prefix), settings.run_retention_days * 86400)
    try:
        relay.run(stop)
    finally:
        redis.close()
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
    ) -> None:
        self.database_url = database_url
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s
        self.batch_limit = batch_limit
        self.active = threading.Event()  # set while this relay holds the lock (tests watch it)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._serve(stop)
            except (psycopg.Error, RedisError) as exc:
                log.warning("relay.error", extra={"error": repr(exc)})
                stop.wait(ERROR_BACKOFF_SECONDS)
            finally:
                self.active.clear()

    def _serve(self, stop: threading.Event) -> None:
        # The lock lives as long as this session, so a relay that dies (or loses its connection)
        # lets a standby take over at its next try.
        with db.connect(self.database_url) as conn:
            while not try_lock(conn):
                if stop.wait(STANDBY_SECONDS):
                    return
            conn.execute(db.q("relay_listen"))
            self.active.set()
            log.info("relay.active")
            while not stop.is_set():
                self.ensure_epoch(conn)
                if self.publish_batch(conn) >= self.batch_limit:
                    continue  # a backlog: keep going without waiting
                # Wakes on the first notification (or those that came in during the batch).
                for _ in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                    pass

    def publish_batch(self, conn: Conn) -> int:
        ids, events = take_batch(conn, self.batch_limit)
        if events:
            publish(self.redis, self.keys, events, self.retention_s)
            mark_published(conn, ids)
        return len(events)

    def ensure_epoch(self, conn: Conn) -> None:
        """Redis without our epoch key has lost its data: put back what live tails may read."""
        if self.redis.exists(self.keys.epoch):
            return
        count = rebuild_streams(conn, self.redis, self.keys, self.retention_s)
        self.redis.set(self.keys.epoch, f"{time.time():.3f}:{uuid.uuid4().hex[:8]}")
        log.info("relay.rebuilt", extra={"events": count})


def try_lock(conn: Conn) -> bool:
    return bool(conn.execute(db.q("relay_try_lock"), {"key": RELAY_LOCK}).fetchone()["locked"])


def take_batch(conn: Conn, limit: int = BATCH_LIMIT) -> tuple[list[int], list[Event]]:
    """The outbox ids and events of the oldest unpublished rows, each with its tseq."""
    rows = conn.execute(db.q("relay_take_batch"), {"limit": limit}).fetchall()
    return [row["id"] for row in rows], [Event.from_row(row) for row in rows]


def mark_published(conn: Conn, ids: list[int]) -> None:
    conn.execute(db.q("relay_mark_published"), {"ids": ids})


def entry_fields(event: Event) -> dict[str, Any]:
    """A stream entry: the event as clients see it, plus what the tenant tail filters on."""
    return {
        "event": json.dumps(event.to_json()),
        "type": event.type.value,
        "queue": event.queue,
        "tseq": event.tseq or 0,
    }


def publish(redis: Redis, keys: Keys, events: list[Event], retention_s: int) -> None:
    """XADD each event to its run and tenant streams in one pipeline; repeats are refused."""
    pipe = redis.pipeline(transaction=False)
    fields = {id(e): entry_fields(e) for e in events}
    for event in events:  # in id order, which is seq order within a run
        pipe.xadd(
            keys.run_stream(event.run_id),
            fields[id(event)],
            id=stream_id(event.seq),
            maxlen=RUN_STREAM_MAXLEN,
            approximate=True,
        )
    for event in sorted(events, key=lambda e: (e.tenant, e.tseq or 0)):
        if event.tseq:
            pipe.xadd(
                keys.tenant_stream(event.tenant),
                fields[id(event)],
                id=stream_id(event.tseq),
                maxlen=TENANT_STREAM_MAXLEN,
                approximate=True,
            )
    for run_id in {e.run_id for e in events if e.type.terminal}:
        pipe.expire(keys.run_stream(run_id), retention_s)
    for tenant in {e.tenant for e in events}:
        pipe.expire(keys.tenant_stream(tenant), retention_s)
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, Exception) and not already_published(result):
            raise result


def already_published(error: Exception) -> bool:
    """The one XADD error that is expected: this ID (or a later one) is already in the stream."""
    return isinstance(error, ResponseError) and _TOP_REFUSAL in str(error)


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
        publish(redis, keys, [Event.from_row(row) for row in rows], retention_s)
        after_id = rows[-1]["id"]
        count += len(rows)
