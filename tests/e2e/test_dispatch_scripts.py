"""Dispatch after Redis forgot its scripts (a restart, SCRIPT FLUSH): app.dispatch sends its Lua by
SHA, and each caller loads it and enqueues again. On a Redis of the test's own, since flushing
the machine's scripts would reach into every other test running beside this one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import SimpleNamespace

import requests
from redis import Redis
from rq import Queue
from rq.job import Job

from app import db, dispatch
from app.redis_keys import Keys
from tests.conftest import auth
from tests.e2e.test_redis_restart import Restartable
from tests.helpers import Stack
from tests.tails import emit_progress, started_run, stream_seqs
from workers import relay


def listed(redis: Redis, keys: Keys, queue: str = "default", priority: int = 5) -> list[str]:
    name = Queue(keys.rq_queue(queue, priority), connection=redis).key
    return [i.decode() for i in redis.lrange(name, 0, -1)]


def test_an_enqueue_loads_the_script_redis_forgot(own_redis: Restartable) -> None:
    redis, keys = Redis.from_url(own_redis.url), Keys(f"t{uuid.uuid4().hex[:8]}")
    first, second = (SimpleNamespace(id=str(uuid.uuid4()), queue="default", priority=5,
                                     task="demo.noop") for _ in range(2))  # fmt: skip
    dispatch.enqueue(redis, keys, [first])
    redis.script_flush()

    dispatch.enqueue(redis, keys, [second])

    assert listed(redis, keys) == [first.id, second.id]
    assert Job.fetch(second.id, connection=redis).args == (second.id,)
    redis.close()


def test_the_relay_loads_the_publish_script_redis_forgot(
    own_redis: Restartable, database_url: str
) -> None:
    redis, keys = Redis.from_url(own_redis.url), Keys(f"t{uuid.uuid4().hex[:8]}")
    with db.connect(database_url) as conn:
        first, second = started_run(conn), started_run(conn)
        relay.publish(redis, keys, relay.take_batch(conn), 3600)
        redis.script_flush()
        emit_progress(conn, second, 1)

        relay.publish(redis, keys, relay.take_batch(conn, skip=[]), 3600)

    assert stream_seqs(redis, keys.run_stream(first.id)) == [1, 2]
    assert stream_seqs(redis, keys.run_stream(second.id)) == [1, 2, 3]
    redis.close()


def test_a_submit_after_redis_forgot_its_scripts_is_dispatched_and_stored(
    stack_factory: Callable[..., Stack], own_redis: Restartable, prefix: str
) -> None:
    stack = stack_factory(REDIS_URL=own_redis.url)
    stack.run_release()
    stack.start("web")
    stack.wait_ready()
    redis = Redis.from_url(own_redis.url)
    redis.script_flush()  # what a restart does; the web's script SHAs are now unknown
    headers = {**auth(), "Idempotency-Key": "after-flush"}
    body = {"task": "demo.noop", "input": {"n": 1}}

    made = requests.post(f"{stack.base}/v1/runs", json=body, headers=headers, timeout=10)
    again = requests.post(f"{stack.base}/v1/runs", json=body, headers=headers, timeout=10)

    assert made.status_code == 201, made.text
    assert listed(redis, Keys(prefix)) == [made.json()["id"]]  # no sweep running: the web did
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == made.json()["id"]
    redis.close()
