"""The stream reader of a web process: one thread, one blocking Redis connection, fanning stream
entries out to every local tail, however many there are.

The reader XREAD BLOCKs on the streams that local tails wait on, plus a wake stream of its own
that a new subscription writes to, so that the reader picks up the new stream at once. Delivery
here is best effort: tails number what they get (seq or tseq) and fill anything missing from
Postgres, so an entry lost to a Redis restart or a reconnect costs latency, never correctness.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

from psycopg_pool import ConnectionPool
from redis import Redis
from redis.exceptions import RedisError

from app import db, logs, runs
from app.domain import TERMINAL_EVENTS, Event
from app.redis_keys import Keys, stream_id, stream_number

log = logs.get("runlane.streams")

BLOCK_MS = 1000
READ_COUNT = 500
RETRY_SECONDS = 0.5
WAKE_MAXLEN = 100
WAKE_TTL_S = 3600
IDLE_SECONDS = 1.0  # a tail that got nothing for this long asks Postgres (relay dead, Redis empty)
PAGE = 1000
TERMINAL_TYPES = frozenset(t.value for t in TERMINAL_EVENTS)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: `number` is its seq (run streams) or tseq (tenant streams)."""

    number: int
    type: str
    queue: str
    event: str  # the event's JSON, as clients get it

    @classmethod
    def from_event(cls, event: Event, number: int) -> Entry:
        # the JSON Postgres rendered, as the relay does for the streams: history and live agree
        return cls(number, event.type.value, event.queue, event.json)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


GAP = Entry(0, "gap", "", '{"type": "gap"}')  # a tenant tail's events were deleted past its cursor


class Subscription:
    """What one tail receives from one stream; close it (or use `with`) when the tail ends."""

    def __init__(self, hub: StreamHub, stream: str) -> None:
        self.hub = hub
        self.stream = stream
        self._queue: queue.SimpleQueue[list[Entry]] = queue.SimpleQueue()

    def deliver(self, entries: list[Entry]) -> None:
        self._queue.put(entries)

    def get(self, timeout: float) -> list[Entry]:
        """Entries received since the last call, waiting up to `timeout` for the first ones."""
        try:
            entries = list(self._queue.get(timeout=timeout))
        except queue.Empty:
            return []
        while True:
            try:
                entries += self._queue.get_nowait()
            except queue.Empty:
                return entries

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamHub:
    """Per web process: subscriptions to Redis streams, served by one reader thread."""

    def __init__(self, connect: Callable[[], Redis], keys: Keys) -> None:
        self._connect = connect
        self.keys = keys
        self.wake_key = keys.wake(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, str] = {}  # stream -> last entry id read (or to read after)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._control: Redis | None = None

    @classmethod
    def from_url(cls, url: str, keys: Keys) -> StreamHub:
        # The reader's socket timeout must outlast its longest BLOCK.
        return cls(lambda: Redis.from_url(url, socket_timeout=BLOCK_MS / 1000 + 10), keys)

    def subscribe(self, stream: str, after: int) -> Subscription:
        """Entries of `stream` from after `after` on (from where the reader already is, if
        another local tail follows the same stream: the tail fills any gap from Postgres)."""
        sub = Subscription(self, stream)
        with self._lock:
            self._ensure_started()
            new = stream not in self._subscribers
            self._subscribers.setdefault(stream, set()).add(sub)
            if new:
                self._cursors[stream] = stream_id(after)
        if new:
            self._wake()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.stream)
            if subs is None:
                return
            subs.discard(sub)
            if not subs:  # the reader drops the stream at its next read
                del self._subscribers[sub.stream]
                del self._cursors[sub.stream]

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._wake()
            self._thread.join(BLOCK_MS / 1000 + 2)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._subscribers.values())

    def _ensure_started(self) -> None:
        # Started on first use, so that a forking server starts it in each worker process.
        if self._thread is None or not self._thread.is_alive():
            self._control = self._connect()
            self._thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        if self._control is None:
            return
        try:
            pipe = self._control.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {"w": 1}, maxlen=WAKE_MAXLEN, approximate=True)
            pipe.expire(self.wake_key, WAKE_TTL_S)
            pipe.execute()
        except RedisError as exc:  # the reader picks the stream up at its next read anyway
            log.warning("streams.wake_failed", extra={"error": repr(exc)})

    def _run(self) -> None:
        redis: Redis | None = None
        wake_cursor = "0-0"
        while not self._stopped.is_set():
            try:
                if redis is None:
                    redis = self._connect()
                wake_cursor = self._read_once(redis, wake_cursor)
            except RedisError as exc:
                log.warning("streams.read_failed", extra={"error": repr(exc)})
                if redis is not None:
                    redis.close()
                redis = None
                self._stopped.wait(RETRY_SECONDS)
        if redis is not None:
            redis.close()

    def _read_once(self, redis: Redis, wake_cursor: str) -> str:
        with self._lock:
            wanted: dict[Any, Any] = {self.wake_key: wake_cursor, **self._cursors}
        reply = redis.xread(wanted, count=READ_COUNT, block=BLOCK_MS)
        for raw_key, raw_entries in _stream_items(reply):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if not raw_entries:
                continue
            last_id = _text(raw_entries[-1][0])
            if key == self.wake_key:
                wake_cursor = last_id
                continue
            entries = [_entry(entry_id, fields) for entry_id, fields in raw_entries]
            with self._lock:
                if key not in self._cursors:
                    continue  # its last tail left meanwhile
                self._cursors[key] = last_id
                subs = list(self._subscribers.get(key, ()))
            for sub in subs:
                sub.deliver(entries)
        return wake_cursor


def _stream_items(reply: Any) -> list[tuple[Any, list[Any]]]:
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3 answers with a map
        return list(reply.items())
    return [(key, entries) for key, entries in reply]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    return Entry(
        number=stream_number(entry_id),
        type=_text(fields.get(b"type", b"")),
        queue=_text(fields.get(b"queue", b"")),
        event=_text(fields.get(b"event", b"{}")),
    )


# --- following a stream: exactly once, in order, no gap, whatever Redis does -----------------


Fetch = Callable[[int], list[Entry]]  # entries numbered above n, from Postgres, in order


class Follower:
    """Yields a stream's entries numbered above `after`, each once and in order, filling what
    Redis did not bring (missed, trimmed, lost) from Postgres. Yields None after each idle
    interval, so that its caller can check on its client (or send a heartbeat).

    It ends after a terminal entry (`until_terminal`) or once it has delivered entry `end`; a
    follower whose `after` is already at or past `end` ends at once, without subscribing."""

    def __init__(
        self,
        hub: StreamHub,
        stream: str,
        fetch: Fetch,
        *,
        after: int,
        start: int,
        until_terminal: bool,
        end: int | None = None,
        accept: Callable[[Entry], bool] = lambda entry: True,
        idle_s: float = IDLE_SECONDS,
    ) -> None:
        self.hub, self.stream, self.fetch = hub, stream, fetch
        self.last, self.start = after, start
        self.until_terminal = until_terminal
        self.end = end
        self.accept = accept
        self.idle_s = idle_s
        self.finished = end is not None and after >= end

    def __iter__(self) -> Iterator[Entry | None]:
        if self.finished:
            return
        # Subscribing before reading Postgres: whatever is published meanwhile is not missed.
        with self.hub.subscribe(self.stream, self.start) as sub:
            yield from self._catch_up()
            while not self.finished:
                entries = sub.get(self.idle_s)
                if not entries:
                    caught = yield from self._catch_up()  # the safety poll
                    if not caught:
                        yield None
                    continue
                yield from self._live(entries)

    def _live(self, entries: list[Entry]) -> Iterator[Entry | None]:
        for entry in entries:
            if self.finished:
                return
            if entry.number <= self.last:
                continue  # already delivered (from Postgres, or an overlapping read)
            if entry.number > self.last + 1:
                yield from self._catch_up()  # entries went missing in Redis: Postgres has them
                if entry.number <= self.last:
                    continue
            yield from self._deliver(entry)

    def _catch_up(self) -> Generator[Entry | None, None, int]:
        caught = 0
        while not self.finished:
            page = self.fetch(self.last)
            for entry in page:
                if entry.number > self.last + 1 and not self.until_terminal:
                    yield GAP  # deleted by retention: say so rather than skip silently
                yield from self._deliver(entry)
                caught += 1
                if self.finished:
                    break
            if len(page) < PAGE:
                break
        return caught

    def _deliver(self, entry: Entry) -> Iterator[Entry]:
        self.last = entry.number
        if self.accept(entry):
            yield entry
        if (self.until_terminal and entry.terminal) or (
            self.end is not None and self.last >= self.end
        ):
            self.finished = True


def follow_run(
    pool: ConnectionPool,
    hub: StreamHub,
    run_id: str,
    *,
    after: int,
    last_seq: int,
    terminal: bool = False,
) -> Follower:
    """A run's events with seq > after, history first; it ends after a terminal event.
    `last_seq` is the run's last seq when the tail began: the stream is read from there on.
    `terminal`: the run had ended by then, so nothing past `last_seq` is waited for; a tail
    resumed at or past it ends at once instead of waiting forever for an event that came."""

    def fetch(n: int) -> list[Entry]:
        with pool.connection() as conn:
            events = runs.list_events(conn, run_id, after=n, limit=PAGE)
        return [Entry.from_event(event, event.seq) for event in events]

    return Follower(
        hub, hub.keys.run_stream(run_id), fetch,
        after=after, start=max(after, last_seq), until_terminal=True,
        end=last_seq if terminal else None,
    )  # fmt: skip


def follow_tenant(
    pool: ConnectionPool, hub: StreamHub, tenant: str, *, after: int, top: int, queue: str | None
) -> Follower:
    """Every event of a tenant's runs with tseq > after (of one queue, if given), forever.
    `top` is the tenant's last tseq when the tail began: the stream is read from there on."""

    def fetch(n: int) -> list[Entry]:
        with pool.connection() as conn:
            rows = conn.execute(
                db.q("tenant_events"), {"tenant": tenant, "after": n, "limit": PAGE}
            ).fetchall()
        return [_tenant_entry(cast(dict[str, Any], row)) for row in rows]

    return Follower(
        hub, hub.keys.tenant_stream(tenant), fetch,
        after=after, start=max(after, top), until_terminal=False,
        accept=lambda entry: queue is None or entry is GAP or entry.queue == queue,
    )  # fmt: skip


def tenant_top(pool: ConnectionPool, tenant: str) -> int:
    """The last tseq given to the tenant's events: a tail without a cursor starts after it."""
    with pool.connection() as conn:
        row = cast(
            dict[str, Any] | None,
            conn.execute(db.q("tenant_last_tseq"), {"tenant": tenant}).fetchone(),
        )
    return int(row["last_tseq"]) if row else 0


def _tenant_entry(row: dict[str, Any]) -> Entry:
    return Entry.from_event(Event.from_row(row), row["tseq"])
