"""The per-process stream reader and the followers built on it, against real Redis and Postgres:
fan-out, prompt pickup of new streams, and exactly-once delivery whatever Redis does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from redis import Redis

from app import attempts, db, runs
from app.config import Settings
from app.redis_keys import Keys
from app.web.streams import GAP, Entry, Follower, StreamHub, follow_run, follow_tenant, tenant_top
from tests.helpers import wait_for
from tests.tails import emit_progress, started_run, wait_flushed
from workers.relay import Relay, publish, take_batch


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(database_url) as connection:
        yield connection


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = db.make_pool(database_url, max_size=4)
    yield pool
    pool.close()


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def hub(redis_url: str, keys: Keys) -> Iterator[StreamHub]:
    hub = StreamHub.from_url(redis_url, keys)
    yield hub
    hub.stop()


@pytest.fixture
def relay(settings: Settings, redis: Redis, keys: Keys) -> Iterator[Relay]:
    assert settings.database_url
    relay = Relay(settings.database_url, redis, keys, 3600)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(relay.active.is_set, 5, message="the relay")
    yield relay
    stop.set()
    thread.join(5)


def add(redis: Redis, key: str, n: int, kind: str = "run.progress") -> None:
    redis.xadd(key, {"event": f'{{"seq": {n}}}', "type": kind, "queue": "q"}, id=f"{n}-0")


def collect(follower: Follower, *, until: int | None = None, timeout: float = 10) -> list[Entry]:
    """What a follower yields until it ends (or has yielded `until` entries)."""
    got: list[Entry] = []
    deadline = time.monotonic() + timeout
    for entry in follower:
        if entry is not None:
            got.append(entry)
        if until is not None and len(got) >= until:
            break
        assert time.monotonic() < deadline, f"follower stuck after {[e.number for e in got]}"
    return got


def test_entries_fan_out_to_every_subscriber_of_their_stream(hub, redis, keys) -> None:
    a, b = keys.run_stream("a"), keys.run_stream("b")
    first, second, other = hub.subscribe(a, 0), hub.subscribe(a, 0), hub.subscribe(b, 0)
    for n in (1, 2, 3):
        add(redis, a, n)
    add(redis, b, 1)
    for sub in (first, second):
        got: list[Entry] = []
        wait_for(lambda s=sub: got.extend(s.get(0.1)) or len(got) == 3, 5)  # noqa: B023
        assert [e.number for e in got] == [1, 2, 3] and got[0].event == '{"seq": 1}'
    assert [e.number for e in other.get(5)] == [1]
    for sub in (first, second, other):
        sub.close()
    assert hub.subscriber_count == 0


def test_a_new_subscription_wakes_the_blocked_reader(hub, redis, keys) -> None:
    with hub.subscribe(keys.run_stream("idle"), 0):
        time.sleep(0.2)  # let the reader block on the first stream
        with hub.subscribe(keys.run_stream("new"), 0) as sub:
            time.sleep(0.05)
            started = time.monotonic()
            add(redis, keys.run_stream("new"), 1)
            assert [e.number for e in sub.get(2)] == [1]
            assert time.monotonic() - started < 0.5  # not after the reader's 1 s BLOCK


def test_follow_run_delivers_history_then_live_once_in_order(conn, pool, hub, relay) -> None:
    run = started_run(conn)
    emit_progress(conn, run, 5)
    follower = follow_run(pool, hub, run.id, after=3, last_seq=runs.load_run(conn, run.id).last_seq)

    def finish_later() -> None:
        emit_progress(conn, run, 20)
        attempts.group_commit(conn, [attempts.finish_change(run, {"ok": 1})])

    threading.Timer(0.2, finish_later).start()
    got = collect(follower)
    assert [e.number for e in got] == list(range(4, 29))
    assert got[-1].type == "run.succeeded"


def test_follow_run_fills_a_gap_in_the_stream_from_postgres(conn, pool, hub, redis, keys):
    run = started_run(conn)
    follower = iter(follow_run(pool, hub, run.id, after=0, last_seq=2))
    got = [next(follower), next(follower)]  # the history: seq 1 and 2
    emit_progress(conn, run, 4)  # seq 3..6, of which Redis gets only 6
    publish(redis, keys, [e for e in take_batch(conn) if e.seq == 6], 3600)
    started = time.monotonic()
    got.append(next(follower))
    assert time.monotonic() - started < 0.8  # filled on seeing 6, not by the idle poll
    attempts.group_commit(conn, [attempts.finish_change(run, None)])
    got += [e for e in follower if e is not None]
    assert [e.number for e in got] == list(range(1, 8))


def test_follow_run_without_a_relay_polls_postgres(conn, pool, hub) -> None:
    run = started_run(conn)
    follower = follow_run(pool, hub, run.id, after=0, last_seq=2)
    threading.Timer(
        0.3, lambda: attempts.group_commit(conn, [attempts.finish_change(run, None)])
    ).start()
    got = collect(follower, timeout=10)
    assert [e.number for e in got] == [1, 2, 3]


def test_follow_run_survives_redis_being_emptied(conn, pool, hub, redis, keys, relay) -> None:
    run = started_run(conn)
    follower = iter(follow_run(pool, hub, run.id, after=0, last_seq=2))
    got = [next(follower), next(follower)]
    emit_progress(conn, run, 3)
    wait_flushed(conn, redis, keys, run.id)
    redis.delete(*redis.keys(f"{keys.prefix}:*"))
    emit_progress(conn, run, 3)
    attempts.group_commit(conn, [attempts.finish_change(run, None)])
    got += [e for e in follower if e is not None]
    assert [e.number for e in got] == list(range(1, 10))


def test_follow_tenant_filters_by_queue_and_resumes_after_a_cursor(conn, pool, hub, relay) -> None:
    a, b = started_run(conn, queue="a"), started_run(conn, queue="b")
    emit_progress(conn, a, 2)
    wait_for(lambda: tenant_top(pool, "alpha") == 6, 5, message="tseqs for 6 events")
    everything = collect(follow_tenant(pool, hub, "alpha", after=0, top=6, queue=None), until=6)
    assert [e.number for e in everything] == list(range(1, 7))

    only_a = follow_tenant(pool, hub, "alpha", after=3, top=6, queue="a")
    emit_progress(conn, b, 1)
    emit_progress(conn, a, 1)
    expected = [e.number for e in everything if e.number > 3 and e.queue == "a"] + [8]
    got = collect(only_a, until=len(expected))
    assert [e.number for e in got] == expected
    assert all(e.queue == "a" for e in got)


def test_follow_tenant_says_gap_when_events_after_the_cursor_were_deleted(
    conn, pool, hub, relay, redis, keys
) -> None:
    old, kept = started_run(conn), started_run(conn)
    wait_flushed(conn, redis, keys, kept.id)
    conn.execute("DELETE FROM runs WHERE id = %s", (old.id,))  # retention took it (tseq 1, 2)
    follower = follow_tenant(pool, hub, "alpha", after=0, top=4, queue=None)
    got = collect(follower, until=3)
    assert got[0] is GAP
    assert [e.number for e in got[1:]] == [3, 4]


def test_follow_run_of_a_finished_run_ends_at_once_from_its_last_event_on(conn, pool, hub) -> None:
    run = started_run(conn)
    attempts.group_commit(conn, [attempts.finish_change(run, None)])  # seq 3, the last
    for after in (3, 10):
        follower = follow_run(pool, hub, run.id, after=after, last_seq=3, terminal=True)
        started = time.monotonic()
        assert collect(follower, timeout=3) == []
        assert time.monotonic() - started < 0.5  # not after an idle poll, let alone never
    assert hub.subscriber_count == 0
    got = collect(follow_run(pool, hub, run.id, after=2, last_seq=3, terminal=True))
    assert [(e.number, e.type) for e in got] == [(3, "run.succeeded")]
