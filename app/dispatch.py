"""Dispatch: hands queued runs to RQ. Postgres says what must run; RQ only carries run ids.

A run id may reach RQ more than once (the web's fast path, then the scheduler's sweep after a crash
or an emptied Redis); the worker's claim in Postgres makes every delivery but one a no-op.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError
from rq import Queue
from rq.job import Job, JobStatus
from rq.queue import EnqueueData
from rq.utils import utcformat

from app.domain import Run
from app.redis_keys import ENQUEUE_JOBS, Keys

JOB_FUNC = "workers.execute.perform"
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"  # as long as every run id: a uuid
SCRIPT_CHUNK = 1000  # jobs per ENQUEUE_JOBS call (Lua's unpack has a limit)
ENQUEUE_JOBS_SHA = hashlib.sha1(ENQUEUE_JOBS.encode()).hexdigest()  # what Redis names it by
RQ_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # rq.utils.utcformat's
CANCEL_FLAG_TTL_S = 24 * 3600  # a worker polls the flag while the attempt runs, a lease at most


def enqueue(
    redis: Redis, keys: Keys, runs: Iterable[Run], *, pipeline: Pipeline | None = None
) -> int:
    """Push the runs onto their queue's priority list, in one pipeline. Returns how many.

    Given a `pipeline`, the commands are only added to it: the caller executes it together with
    its own (the web's submit path stores the idempotent response in the same round trip). The
    script goes by SHA, as a Script object would first ask SCRIPT EXISTS, a second round trip:
    if that execute raises NoScriptError (Redis restarted and forgot the script), the caller
    enqueues again without a pipeline, which loads it.
    """
    by_queue: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_queue[keys.rq_queue(run.queue, run.priority)].append(run)
    if not by_queue:
        return 0
    if pipeline is not None:
        _add(redis, keys, by_queue, pipeline)
        return sum(len(batch) for batch in by_queue.values())
    for loaded in (False, True):
        with redis.pipeline(transaction=False) as pipe:
            _add(redis, keys, by_queue, pipe)
            try:
                pipe.execute()
                break
            except NoScriptError:  # nothing of the scripts ran: once more, the script loaded
                if loaded:
                    raise
                redis.script_load(ENQUEUE_JOBS)
    return sum(len(batch) for batch in by_queue.values())


def _add(redis: Redis, keys: Keys, by_queue: dict[str, list[Run]], pipe: Pipeline) -> None:
    for name, batch in by_queue.items():
        template = _recorded(name)
        if template is None or any(len(run.id) != len(PLACEHOLDER) for run in batch):
            _enqueue_each(redis, name, batch, pipe)
            continue
        for start in range(0, len(batch), SCRIPT_CHUNK):
            args = template.args(batch[start : start + SCRIPT_CHUNK])
            pipe.evalsha(ENQUEUE_JOBS_SHA, 2, template.queue_key, Queue.redis_queues_keys, *args)
    nudge_relay(pipe, keys)  # every dispatch follows a commit that wrote a run.queued event


def _job(run_id: str, description: str) -> EnqueueData:
    return Queue.prepare_data(
        JOB_FUNC,
        args=(run_id,),
        job_id=run_id,
        timeout=-1,  # runlane enforces timeout_s itself, per attempt
        result_ttl=0,
        failure_ttl=3600,
        description=description,
    )


def _enqueue_each(redis: Redis, name: str, batch: list[Run], pipe: Pipeline) -> None:
    """RQ's own way, job by job: for a job RQ would write in a shape _template does not know."""
    jobs = [_job(run.id, _description(run)) for run in batch]
    Queue(name, connection=redis).enqueue_many(jobs, pipeline=pipe)


def _description(run: Run) -> str:
    return f"{run.task} {run.id}"


@dataclass(frozen=True)
class _Template:
    """What RQ writes for one job of ours on a queue, but for the fields that name the run."""

    queue_key: str  # the RQ queue's list
    shared: list[Any]  # field, value pairs: the same for every job of this enqueue
    data: bytes  # RQ's serialized call of the job function, on PLACEHOLDER (uncompressed)
    stamps: tuple[int, ...] = ()  # where in `shared` RQ put the time of the enqueue

    def args(self, runs: list[Run]) -> list[Any]:
        """ENQUEUE_JOBS's arguments for these runs, stamped with the time now."""
        shared = list(self.shared)
        stamp = utcformat(datetime.now(UTC))
        for index in self.stamps:
            shared[index] = stamp
        found: list[Any] = [Job.redis_job_namespace_prefix, len(shared) // 2, *shared]
        placeholder = PLACEHOLDER.encode()
        for run in runs:
            data = self.data.replace(placeholder, run.id.encode())
            found += (run.id, _compress(data), _description(run))
        return found


@functools.lru_cache(maxsize=1024)
def _recorded(name: str) -> _Template | None:
    """The queue's template, recorded once per process: recording it is an RQ enqueue, as
    costly as the rest of a one-run submit's dispatch. It names no connection: nothing is sent."""
    return _template(Redis(), name)


def _template(redis: Redis, name: str) -> _Template | None:
    """RQ's enqueue of one job on PLACEHOLDER, recorded from a pipeline never sent: the three
    commands it issues (the status, the job hash, the push) and the one hash the batch's jobs
    share but for their id, data and description. None if RQ wrote anything else."""
    queue = Queue(name, connection=redis)
    with redis.pipeline(transaction=False) as recorder:
        queue.enqueue_many([_job(PLACEHOLDER, "")], pipeline=recorder)
        commands = [tuple(command[0]) for command in recorder.command_stack]
        recorder.reset()
    key = Job.key_for(PLACEHOLDER)
    expected = [
        ("SADD", Queue.redis_queues_keys, queue.key),
        ("HSET", key, "status", JobStatus.QUEUED),
        ("RPUSH", queue.key, PLACEHOLDER),
    ]
    hashes = [c for c in commands if c[:2] == ("HSET", key) and len(c) > 4]
    if len(hashes) != 1 or [c for c in commands if c not in hashes] != expected:
        return None
    fields = dict(zip(hashes[0][2::2], hashes[0][3::2], strict=True))
    data = zlib.decompress(fields.pop("data"))
    fields.pop("description")
    if data.count(PLACEHOLDER.encode()) != 1 or PLACEHOLDER in str(fields):
        return None
    shared = [item for pair in fields.items() for item in pair]
    stamps = tuple(i + 1 for i in range(0, len(shared), 2) if _is_stamp(shared[i + 1]))
    return _Template(queue.key, shared, data, stamps)


def _is_stamp(value: Any) -> bool:
    """Whether RQ wrote `value` as a time (created_at, enqueued_at): those are the enqueue's."""
    if not isinstance(value, str):
        return False
    try:
        datetime.strptime(value, RQ_TIME_FORMAT)
    except ValueError:
        return False
    return True


def _compress(data: bytes) -> bytes:
    """zlib, as RQ stores a job's data, with a small window and memory level: RQ's call sets up
    some 270 KB of deflate state per job, a fifth of a batch's time for 80-byte payloads."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 9, 1)
    return packer.compress(data) + packer.flush()


def nudge_relay(target: Redis | Pipeline, keys: Keys) -> None:
    """Wake the relay after a commit that wrote events (see Keys.relay_nudge)."""
    target.xadd(keys.relay_nudge, {"n": 1}, maxlen=1, approximate=False)


def request_stops(target: Redis | Pipeline, keys: Keys, runs: Iterable[Run]) -> None:
    """Ask the running attempts of these runs (their cancel requested in Postgres) to stop now:
    their workers poll these flags every few hundred ms, and otherwise learn of the request from
    Postgres at their next lease renewal."""
    for run in runs:
        target.set(keys.cancel(run.id, run.attempt), "1", ex=CANCEL_FLAG_TTL_S)
