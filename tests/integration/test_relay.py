"""The outbox relay against real Postgres and Redis: batches, idempotency, order, one active relay,
and Redis losing its data."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from redis import Redis

from app import attempts, db, runs
from app.config import Settings
from app.domain import rfc3339
from app.redis_keys import Keys
from app.web.streams import Entry
from tests.helpers import wait_for
from tests.tails import emit_progress, outbox_flushed, started_run, stream_seqs, wait_flushed
from workers import relay as relay_mod
from workers.relay import Relay, backlog, publish, take_batch


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(database_url) as connection:
        yield connection


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


def make_relay(settings: Settings, redis: Redis, keys: Keys, **kwargs: Any) -> Relay:
    assert settings.database_url
    return Relay(settings.database_url, redis, keys, 3600, **kwargs)


def tseqs(conn: psycopg.Connection[Any], tenant: str) -> list[int]:
    rows = conn.execute(
        "SELECT tseq FROM run_events WHERE tenant = %s ORDER BY tseq", (tenant,)
    ).fetchall()
    return [row["tseq"] for row in rows]


def test_a_batch_goes_to_run_and_tenant_streams(conn, redis, keys, settings) -> None:
    a1, a2 = started_run(conn, "alpha"), started_run(conn, "alpha")
    b1 = started_run(conn, "beta", queue="other")
    emit_progress(conn, a1, 3)
    emit_progress(conn, b1, 2)

    published = make_relay(settings, redis, keys).publish_batch(conn)

    assert published == 5 + 2 + 4
    assert stream_seqs(redis, keys.run_stream(a1.id)) == [1, 2, 3, 4, 5]
    assert stream_seqs(redis, keys.run_stream(a2.id)) == [1, 2]
    assert stream_seqs(redis, keys.tenant_stream("alpha")) == list(range(1, 8))
    assert stream_seqs(redis, keys.tenant_stream("beta")) == [1, 2, 3, 4]
    assert tseqs(conn, "alpha") == list(range(1, 8))
    _, fields = redis.xrange(keys.tenant_stream("beta"))[-1]
    assert fields[b"queue"] == b"other" and fields[b"type"] == b"run.progress"
    assert backlog(conn) == 0


def test_history_and_the_streams_carry_the_same_bytes(conn, redis, keys, settings) -> None:
    run = started_run(conn)
    attempts.record_log(conn, run, 'naïve ☃ "quoted"', "info")  # what json.dumps would escape
    attempts.group_commit(conn, [attempts.finish_change(run, {"ratio": 0.1, "n": [1, None]})])
    make_relay(settings, redis, keys).publish_batch(conn)

    live = [fields[b"event"].decode() for _, fields in redis.xrange(keys.run_stream(run.id))]
    history = runs.list_events(conn, run.id)
    tenant_rows = conn.execute(
        db.q("tenant_events"), {"tenant": "alpha", "after": 0, "limit": 10}
    ).fetchall()
    assert [event.json for event in history] == live == [row["json"] for row in tenant_rows]
    assert [Entry.from_event(event, event.seq).event for event in history] == live
    first = history[0].to_json()
    assert list(first) == ["run_id", "seq", "type", "at", "data"]
    assert first["run_id"] == run.id and first["at"] == rfc3339(history[0].at)
    assert [event.to_json() for event in history] == [json.loads(text) for text in live]


def test_small_batches_keep_tseq_contiguous(conn, redis, keys, settings) -> None:
    run = started_run(conn)
    emit_progress(conn, run, 10)
    relay = make_relay(settings, redis, keys, batch_limit=3)
    while relay.publish_batch(conn):
        pass
    assert stream_seqs(redis, keys.run_stream(run.id)) == list(range(1, 13))
    assert stream_seqs(redis, keys.tenant_stream("alpha")) == list(range(1, 13))


def test_a_crash_between_xadd_and_marking_publishes_nothing_twice(conn, redis, keys, settings):
    run = started_run(conn)
    emit_progress(conn, run, 4)
    events = take_batch(conn)
    publish(redis, keys, events, 3600)  # ... and the relay dies before mark_published
    emit_progress(conn, run, 2)

    relay = make_relay(settings, redis, keys)
    assert relay.publish_batch(conn) == len(events) + 2

    assert stream_seqs(redis, keys.run_stream(run.id)) == list(range(1, 9))
    assert stream_seqs(redis, keys.tenant_stream("alpha")) == list(range(1, 9))
    assert tseqs(conn, "alpha") == list(range(1, 9))  # numbers given once are kept


def test_events_sent_but_not_marked_are_found_by_index_among_many(conn, redis, keys, settings):
    """The relay's look for numbered, unmarked events (which it makes whenever a mark overlaps
    the next batch) reads each tenant's range of run_events_tenant_tseq_idx, not every event."""
    run = started_run(conn)
    conn.execute(
        "INSERT INTO run_events (run_id, seq, type, data, tenant, queue)"
        " SELECT %s, 2 + g, 'run.progress', '{}', 'alpha', 'default'"
        " FROM generate_series(1, 5000) AS g",
        (run.id,),
    )
    conn.execute("UPDATE runs SET last_seq = 5002 WHERE id = %s", (run.id,))
    relay = make_relay(settings, redis, keys)
    while relay.publish_batch(conn):
        pass
    conn.execute("UPDATE tenant_streams SET published_tseq = published_tseq - 2")  # unmarked
    conn.execute("ANALYZE run_events")
    plan = conn.execute(
        "EXPLAIN " + db.q("relay_take_batch"), {"skip": [], "limit": 2000}
    ).fetchall()
    assert not [row for row in plan if "Seq Scan on run_events" in row["QUERY PLAN"]], plan
    assert [event.tseq for event in take_batch(conn)] == [5001, 5002]


def test_after_a_crash_small_batches_resend_in_order_and_never_pass_an_unsent_event(
    conn, redis, keys, settings
):
    a, b = started_run(conn, "alpha"), started_run(conn, "beta")
    emit_progress(conn, a, 5)
    emit_progress(conn, b, 5)
    events = take_batch(conn)  # numbered, then the relay dies before publishing anything
    assert len(events) == 14 and backlog(conn) == 14
    emit_progress(conn, a, 2)

    relay = make_relay(settings, redis, keys, batch_limit=4)
    while relay.publish_batch(conn):
        row = conn.execute(
            "SELECT min(e.tseq) AS unsent, max(ts.published_tseq) AS place FROM run_events e"
            " JOIN tenant_streams ts USING (tenant) WHERE ts.tenant = 'alpha'"
            " AND e.tseq > ts.published_tseq"
        ).fetchone()
        assert row["unsent"] is None or row["unsent"] == row["place"] + 1
    assert backlog(conn) == 0
    assert stream_seqs(redis, keys.tenant_stream("alpha")) == list(range(1, 10))
    assert stream_seqs(redis, keys.tenant_stream("beta")) == list(range(1, 8))
    assert stream_seqs(redis, keys.run_stream(a.id)) == list(range(1, 10))


def test_other_redis_errors_leave_rows_unpublished(conn, redis, keys, settings) -> None:
    run = started_run(conn)
    redis.set(keys.run_stream(run.id), "not a stream")
    with pytest.raises(Exception, match="WRONGTYPE"):
        make_relay(settings, redis, keys).publish_batch(conn)
    assert backlog(conn) == 2


def test_terminal_event_sets_the_stream_retention(conn, redis, keys, settings) -> None:
    run = started_run(conn)
    make_relay(settings, redis, keys).publish_batch(conn)
    assert redis.ttl(keys.run_stream(run.id)) == -1
    attempts.group_commit(conn, [attempts.finish_change(run, {"ok": True})])
    make_relay(settings, redis, keys).publish_batch(conn)
    assert 3500 < redis.ttl(keys.run_stream(run.id)) <= 3600


def test_per_run_order_holds_with_concurrent_commits(database_url, conn, redis, keys, settings):
    """Writers commit concurrently (ids interleave across runs) while the relay publishes."""
    targets = [started_run(conn, tenant) for tenant in ("alpha", "alpha", "beta", "beta")]
    stop = threading.Event()
    relay = make_relay(settings, redis, keys, batch_limit=50)
    relay_thread = threading.Thread(target=relay.run, args=(stop,))
    relay_thread.start()

    def write(run: runs.Run) -> None:
        with db.connect(database_url) as own:
            emit_progress(own, run, 150)
            attempts.group_commit(own, [attempts.finish_change(run, None)])

    writers = [threading.Thread(target=write, args=(run,)) for run in targets * 2]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    try:
        for run in targets:
            wait_flushed(conn, redis, keys, run.id, timeout=20)
    finally:
        stop.set()
        relay_thread.join(10)
    for run in targets:
        last = runs.load_run(conn, run.id).last_seq  # type: ignore[union-attr]
        assert stream_seqs(redis, keys.run_stream(run.id)) == list(range(1, last + 1))
    for tenant in ("alpha", "beta"):
        expected = list(range(1, len(tseqs(conn, tenant)) + 1))
        assert stream_seqs(redis, keys.tenant_stream(tenant)) == expected == tseqs(conn, tenant)


def test_two_relays_one_publishes_and_the_other_takes_over(conn, redis, keys, settings) -> None:
    first, second = make_relay(settings, redis, keys), make_relay(settings, redis, keys)
    stops = [threading.Event(), threading.Event()]
    pairs = zip((first, second), stops, strict=True)
    threads = [threading.Thread(target=r.run, args=(s,)) for r, s in pairs]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: first.active.is_set() or second.active.is_set(), 5, message="a relay")
        wait_for(lambda: not (first.active.is_set() and second.active.is_set()), 2)
        active = 0 if first.active.is_set() else 1
        standby = (first, second)[1 - active]
        run = started_run(conn)
        wait_flushed(conn, redis, keys, run.id)
        assert not standby.active.is_set()

        stops[active].set()  # the active relay goes away: its session, and so its lock, ends
        threads[active].join(10)
        wait_for(standby.active.is_set, 5, message="the standby to take over")
        emit_progress(conn, run, 3)
        wait_flushed(conn, redis, keys, run.id)
        assert stream_seqs(redis, keys.run_stream(run.id)) == [1, 2, 3, 4, 5]
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(10)


def test_redis_emptied_streams_are_rebuilt(conn, redis, keys, settings) -> None:
    live, ended = started_run(conn), started_run(conn, "beta")
    emit_progress(conn, live, 2)
    attempts.group_commit(conn, [attempts.finish_change(ended, None)])
    relay = make_relay(settings, redis, keys)
    relay.ensure_epoch(conn)
    relay.publish_batch(conn)
    assert redis.exists(keys.epoch)

    # Redis restarts empty (only this test's keys: the Redis is shared)
    redis.delete(*redis.keys(f"{keys.prefix}:*"))
    relay.ensure_epoch(conn)

    assert redis.exists(keys.epoch)
    assert stream_seqs(redis, keys.run_stream(live.id)) == [1, 2, 3, 4]
    assert stream_seqs(redis, keys.run_stream(ended.id)) == [1, 2, 3]
    assert stream_seqs(redis, keys.tenant_stream("alpha")) == [1, 2, 3, 4]
    emit_progress(conn, live, 1)
    relay.publish_batch(conn)
    assert outbox_flushed(conn, redis, keys, live.id)
    assert stream_seqs(redis, keys.run_stream(live.id)) == [1, 2, 3, 4, 5]


def test_a_batch_after_redis_lost_its_data_puts_the_older_entries_back_first(
    conn, redis, keys, settings
) -> None:
    live = started_run(conn)
    relay = make_relay(settings, redis, keys)
    relay.publish_batch(conn)
    assert stream_seqs(redis, keys.run_stream(live.id)) == [1, 2]
    redis.delete(*redis.keys(f"{keys.prefix}:*"))  # emptied between two batches
    emit_progress(conn, live, 1)

    relay.publish_batch(conn)  # no ensure_epoch first: the publish itself finds the loss

    assert redis.exists(keys.epoch)
    assert stream_seqs(redis, keys.run_stream(live.id)) == [1, 2, 3]


def test_a_guarded_publish_on_an_emptied_redis_writes_nothing(conn, redis, keys) -> None:
    live = started_run(conn)
    events = take_batch(conn)

    with pytest.raises(relay_mod.EpochLost):
        publish(redis, keys, events, 3600, guard=True)

    assert not redis.exists(keys.run_stream(live.id))
    assert publish(redis, keys, events, 3600) == 2 * len(events)  # unguarded: run + tenant


def test_main_exits_on_sigterm_semantics(settings, redis, keys) -> None:
    """run() returns promptly once asked to stop, even while idle between polls."""
    stop = threading.Event()
    relay = make_relay(settings, redis, keys)
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    wait_for(relay.active.is_set, 5)
    stop.set()
    thread.join(relay_mod.FALLBACK_POLL_SECONDS + 2)
    assert not thread.is_alive()


def waiting_relay(relay: Relay, timeout: float) -> threading.Thread:
    thread = threading.Thread(target=relay.wait_for_nudge, args=(timeout,), daemon=True)
    thread.start()
    return thread


def test_a_nudge_wakes_an_idle_relay_at_once(settings, redis, keys, services) -> None:
    relay = make_relay(settings, redis, keys)
    relay.wait_for_nudge(0.01)  # nothing nudged yet: the fallback poll comes due
    waiting = waiting_relay(relay, 30)
    services.nudge_relay()
    waiting.join(5)
    assert not waiting.is_alive(), "the nudge woke the relay, long before its fallback poll"


def test_a_nudge_while_publishing_is_not_missed(settings, redis, keys, services) -> None:
    relay = make_relay(settings, redis, keys)
    services.nudge_relay()
    relay.wait_for_nudge(30)  # takes the first nudge
    services.nudge_relay()  # arrives while the relay is busy publishing
    waiting = waiting_relay(relay, 30)
    waiting.join(5)
    assert not waiting.is_alive(), "the nudge that came meanwhile wakes the next wait"
    assert redis.xlen(keys.relay_nudge) == 1, "the nudge stream stays one entry long"


def test_without_nudges_the_relay_still_publishes(conn, redis, keys, settings) -> None:
    """A writer that never nudges: its events go out on the fallback poll."""
    stop = threading.Event()
    relay = make_relay(settings, redis, keys)
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        wait_for(relay.active.is_set, 5)
        run = started_run(conn)
        stream = keys.run_stream(run.id)
        wait_for(lambda: stream_seqs(redis, stream) == [1, 2], 5, message="the fallback poll")
    finally:
        stop.set()
        thread.join(5)
