"""app.dispatch on a real Redis: the jobs it writes in one script call per queue are the jobs RQ's
own enqueue_many writes (scripts/test-rq runs this against the oldest RQ supported too)."""

from __future__ import annotations

import dataclasses
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from app import dispatch
from app.redis_keys import Keys

PER_ENQUEUE_TIME = {b"created_at", b"enqueued_at"}  # RQ stamps these at each enqueue


def run(queue: str = "default", priority: int = 5, task: str = "demo.noop") -> Any:
    return SimpleNamespace(id=str(uuid.uuid4()), queue=queue, priority=priority, task=task)


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def jobs(redis: Redis) -> Iterator[list[str]]:
    """Ids whose RQ job hashes the test made (their keys carry no prefix of ours)."""
    made: list[str] = []
    yield made
    for start in range(0, len(made), 1000):
        redis.delete(*[Job.key_for(job_id) for job_id in made[start : start + 1000]])


def queued_ids(redis: Redis, keys: Keys, queue: str, priority: int) -> list[str]:
    name = keys.rq_queue(queue, priority)
    return [i.decode() for i in redis.lrange(Queue(name, connection=redis).key, 0, -1)]


def comparable(redis: Redis, job_id: str) -> dict[bytes, bytes]:
    """A job's hash as stored, its data uncompressed and its id-bearing fields on a stand-in."""
    found = redis.hgetall(Job.key_for(job_id))
    found[b"data"] = zlib.decompress(found[b"data"])
    return {
        field: value.replace(job_id.encode(), b"<id>")
        for field, value in found.items()
        if field not in PER_ENQUEUE_TIME
    }


def test_the_jobs_written_are_the_ones_rq_writes(redis: Redis, keys: Keys, jobs: list[str]) -> None:
    ours = run()
    assert dispatch._template(redis, keys.rq_queue("default", 5)) is not None  # the fast path
    dispatch.enqueue(redis, keys, [ours])
    theirs = str(uuid.uuid4())
    jobs += [ours.id, theirs]
    name = keys.rq_queue("default", 5)
    Queue(name, connection=redis).enqueue_many([dispatch._job(theirs, f"demo.noop {theirs}")])

    assert comparable(redis, ours.id) == comparable(redis, theirs)
    assert set(redis.hkeys(Job.key_for(ours.id))) == set(redis.hkeys(Job.key_for(theirs)))
    job = Job.fetch(ours.id, connection=redis)
    assert (job.func_name, job.args, job.origin) == (dispatch.JOB_FUNC, (ours.id,), name)
    assert job.description == f"demo.noop {ours.id}"
    assert job.get_status() == JobStatus.QUEUED
    assert Queue(name, connection=redis).key.encode() in redis.smembers(Queue.redis_queues_keys)
    assert queued_ids(redis, keys, "default", 5) == [ours.id, theirs]


def test_runs_go_to_their_queue_and_priority_in_order(
    redis: Redis, keys: Keys, jobs: list[str]
) -> None:
    # more than one script call's worth on one list, interleaved with two other lists
    runs = [run(priority=1) for _ in range(dispatch.SCRIPT_CHUNK + 7)]
    others = [run(priority=9), run(queue="reports", priority=1)]
    batch = [*runs[:3], others[0], *runs[3:], others[1]]
    jobs += [r.id for r in batch]

    assert dispatch.enqueue(redis, keys, batch) == len(batch)

    assert queued_ids(redis, keys, "default", 1) == [r.id for r in runs]
    assert queued_ids(redis, keys, "default", 9) == [others[0].id]
    assert queued_ids(redis, keys, "reports", 1) == [others[1].id]
    last = Job.fetch(runs[-1].id, connection=redis)
    assert last.args == (runs[-1].id,)
    assert redis.xlen(keys.relay_nudge) == 1


def test_on_a_pipeline_nothing_is_sent_until_the_caller_executes_it(
    redis: Redis, keys: Keys, jobs: list[str]
) -> None:
    ours = run()
    jobs.append(ours.id)
    pipe = redis.pipeline(transaction=False)
    dispatch.enqueue(redis, keys, [ours], pipeline=pipe)
    assert not redis.exists(Job.key_for(ours.id))
    pipe.execute()
    assert queued_ids(redis, keys, "default", 5) == [ours.id]
    assert Job.fetch(ours.id, connection=redis).args == (ours.id,)


def test_when_rq_writes_a_job_another_way_rq_enqueues_each_itself(
    redis: Redis, keys: Keys, jobs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Queue.enqueue_many

    def with_an_extra_command(self: Queue, job_datas: Any, pipeline: Any = None) -> Any:
        pipeline.set(f"{keys.prefix}:extra", 1)  # what a future RQ might add to each enqueue
        return original(self, job_datas, pipeline=pipeline)

    monkeypatch.setattr(Queue, "enqueue_many", with_an_extra_command)
    assert dispatch._template(redis, keys.rq_queue("default", 5)) is None
    runs = [run(), run()]
    jobs += [r.id for r in runs]

    dispatch.enqueue(redis, keys, runs)

    assert queued_ids(redis, keys, "default", 5) == [r.id for r in runs]
    assert redis.exists(f"{keys.prefix}:extra")  # RQ's own enqueue ran
    assert Job.fetch(runs[1].id, connection=redis).args == (runs[1].id,)


def test_a_template_recorded_earlier_stamps_each_job_with_its_own_enqueue_time(
    redis: Redis, keys: Keys, jobs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = keys.rq_queue("default", 5)
    recorded = dispatch._recorded(name)
    assert recorded is not None and recorded is dispatch._recorded(name)  # once per process
    assert {recorded.shared[i - 1] for i in recorded.stamps} == {"created_at", "enqueued_at"}
    long_ago = list(recorded.shared)
    for index in recorded.stamps:
        long_ago[index] = "2000-01-01T00:00:00.000000Z"
    monkeypatch.setattr(
        dispatch, "_recorded", lambda _name: dataclasses.replace(recorded, shared=long_ago)
    )
    ours = run()
    jobs.append(ours.id)
    before = datetime.now(UTC).replace(tzinfo=None)

    dispatch.enqueue(redis, keys, [ours])

    job = Job.fetch(ours.id, connection=redis)
    assert job.created_at is not None and job.enqueued_at is not None
    assert job.created_at.replace(tzinfo=None) >= before.replace(microsecond=0)
    assert job.enqueued_at.replace(tzinfo=None) >= before.replace(microsecond=0)
