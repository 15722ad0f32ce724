"""Test helpers for the relay and the tails: making runs emit events, waiting until a run's outbox
reached its stream, websocket tails that collect what they receive until the terminal event, and
an EventSource that reconnects as a browser's does."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import requests
from httpx_sse import connect_sse
from redis import Redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app import attempts, runs
from app.domain import Run
from app.redis_keys import Keys, stream_number
from tests.helpers import Stack, wait_for
from workers import relay

TERMINAL = {"run.succeeded", "run.failed", "run.cancelled"}
ALPHA = {"Authorization": "Bearer tok-alpha"}


Conn = psycopg.Connection[Any]


def started_run(conn: Conn, tenant: str = "alpha", queue: str = "default") -> Run:
    """A run created and claimed by a fake worker, ready to emit progress (seq 1 and 2 so far)."""
    new = runs.NewRun(
        tenant=tenant,
        task="demo.progress",
        queue=queue,
        input={},
        priority=5,
        max_attempts=1,
        backoff=None,
        timeout_s=None,
        metadata={},
        scheduled_for=None,
    )
    run, _ = runs.create_run(conn, new)
    claimed = attempts.group_commit(
        conn, [attempts.claim_change(run.id, worker="test", lease_s=60)]
    )[0]
    assert claimed is not None
    return claimed


def submit(stack: Stack, steps: int = 40, interval_ms: int = 25, headers: Any = None) -> str:
    """A demo.progress run submitted to a running stack; its id."""
    response = requests.post(
        f"{stack.base}/v1/runs",
        json={"task": "demo.progress", "input": {"steps": steps, "interval_ms": interval_ms}},
        headers=headers or ALPHA,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def finished_run(stack: Stack, steps: int = 3) -> dict[str, Any]:
    """A demo.progress run of a running stack, once it has succeeded."""
    run_id = submit(stack, steps=steps, interval_ms=5)

    def done() -> dict[str, Any] | None:
        run = requests.get(f"{stack.base}/v1/runs/{run_id}", headers=ALPHA, timeout=10).json()
        return run if run["status"] == "succeeded" else None

    return wait_for(done, 30, 0.05, message=f"run {run_id} to succeed")


def emit_progress(conn: psycopg.Connection[Any], run: Run, steps: int) -> None:
    for i in range(1, steps + 1):
        attempts.record_progress(conn, run, round(100 * i / steps), f"step {i}/{steps}")


def outbox_flushed(conn: psycopg.Connection[Any], redis: Redis, keys: Keys, run_id: str) -> bool:
    """Every event of the run is known to be in Redis and its stream's top is the run's last seq."""
    row = conn.execute("SELECT last_seq FROM runs WHERE id = %s", (run_id,)).fetchone()
    if row is None or relay.backlog(conn, run_id):
        return False
    top = redis.xrevrange(keys.run_stream(run_id), count=1)
    return bool(top) and stream_number(top[0][0]) == row["last_seq"]


def wait_flushed(
    conn: psycopg.Connection[Any], redis: Redis, keys: Keys, run_id: str, timeout: float = 10
) -> None:
    wait_for(
        lambda: outbox_flushed(conn, redis, keys, run_id),
        timeout,
        message=f"the outbox of run {run_id} to reach its stream",
    )


def stream_seqs(redis: Redis, key: str) -> list[int]:
    return [stream_number(entry_id) for entry_id, _ in redis.xrange(key)]


class Tail:
    """A websocket tail of one run in a thread, reconnecting with after=<last seq> when asked."""

    def __init__(self, base: str, run_id: str, token: str = "tok-alpha", after: int = 0) -> None:
        self.url = base.replace("http://", "ws://") + f"/v1/runs/{run_id}/tail"
        self.token = token
        self.after = after
        self.events: list[dict[str, Any]] = []
        self.close_codes: list[int | None] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self._drop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Tail:
        self._thread.start()
        return self

    def drop_connection(self) -> None:
        """Close the socket from the client side; the tail reconnects with after=<last seq>."""
        self._drop.set()

    def _run(self) -> None:
        try:
            while not self.done.is_set():
                self._connect_once()
        except BaseException as exc:  # surfaced by wait_terminal
            self.errors.append(exc)
            self.done.set()

    def _connect_once(self) -> None:
        last = self.events[-1]["seq"] if self.events else self.after
        query = urlencode({"after": last, "token": self.token})
        with connect(f"{self.url}?{query}", open_timeout=10) as ws:
            while True:
                if self._drop.is_set():
                    self._drop.clear()
                    return
                try:
                    message = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    self.close_codes.append(ws.close_code)
                    if self.events and self.events[-1]["type"] in TERMINAL:
                        self.done.set()
                    return
                self.events.append(json.loads(message))

    def wait_terminal(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until the tail saw the terminal event and the server closed; its events."""
        wait_for(self.done.is_set, timeout, 0.05, message="a tail to see the terminal event")
        if self.errors:
            raise self.errors[0]
        return self.events


def assert_complete(events: list[dict[str, Any]], after: int = 0) -> None:
    """Ordered, gapless, duplicate-free, ending with one terminal event."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), seqs
    assert events and events[-1]["type"] in TERMINAL
    assert sum(e["type"] in TERMINAL for e in events) == 1


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def close_code_at_once(url: str, timeout: float = 5) -> int | None:
    """Connects a websocket tail that should get nothing and be closed by the server at once:
    its close code (fails if a message comes, or if the server keeps it open past `timeout`)."""
    with connect(url, open_timeout=10) as ws:
        try:
            message = ws.recv(timeout=timeout)
        except ConnectionClosed:
            return ws.close_code
        raise AssertionError(f"expected the tail to close at once, got {message!r}")


@dataclass
class EventSourceLog:
    """What an EventSource saw: each event as {"id", "event", **data}, each connection's status."""

    events: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


def event_source(
    url: str, headers: dict[str, str] | None = None, *, last_event_id: int | None = None,
    max_connections: int = 5, read_timeout: float = 5,
) -> EventSourceLog:  # fmt: skip
    """Follows `url` as a browser's EventSource does: whenever the stream ends it reconnects
    with Last-Event-ID set to the last id it got, until an answer other than a 200 stream (a
    204 stops a browser for good). Fails if the server keeps a stream open with nothing to send
    for `read_timeout`, or makes it reconnect more than `max_connections` times. (A browser
    waits `retry:` ms before reconnecting; nothing here depends on that wait, so it is skipped.)
    """
    seen = EventSourceLog()
    last = str(last_event_id) if last_event_id is not None else None
    timeout = httpx.Timeout(10, read=read_timeout)
    with httpx.Client(timeout=timeout) as client:
        while len(seen.statuses) < max_connections:
            sent = {**(headers or {}), **({"Last-Event-ID": last} if last else {})}
            with connect_sse(client, "GET", url, headers=sent) as source:
                seen.statuses.append(source.response.status_code)
                if source.response.status_code != 200:
                    return seen
                for sse in source.iter_sse():
                    last = sse.id or last
                    if sse.data:  # the `retry:` block dispatches nothing in a browser
                        seen.events.append({"id": int(sse.id), "event": sse.event, **sse.json()})
    raise AssertionError(f"still reconnecting after {max_connections} connections: {seen}")
