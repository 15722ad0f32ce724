"""Dispatch: hands queued runs to RQ. Postgres says what must run; RQ only carries run ids.

A run id may reach RQ more than once (the web's fast path, then the scheduler's sweep after a crash
or an emptied Redis); the worker's claim in Postgres makes every delivery but one a no-op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from app.domain import Run
from app.redis_keys import Keys

JOB_FUNC = "workers.execute.perform"
CANCEL_FLAG_TTL_S = 24 * 3600  # a worker polls the flag while the attempt runs, a lease at most


def enqueue(
    redis: Redis, keys: Keys, runs: Iterable[Run], *, pipeline: Pipeline | None = None
) -> int:
    """Push the runs onto their queue's priority list, in one pipeline. Returns how many.

    Given a `pipeline`, the commands are only added to it: the caller executes it together with
    its own (the web's submit path stores the idempotent response in the same round trip).
    """
    by_queue: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_queue[keys.rq_queue(run.queue, run.priority)].append(run)
    if not by_queue:
        return 0
    pipe = pipeline if pipeline is not None else redis.pipeline(transaction=False)
    for name, batch in by_queue.items():
        queue = Queue(name, connection=redis)
        queue.enqueue_many(
            [
                Queue.prepare_data(
                    JOB_FUNC,
                    args=(run.id,),
                    job_id=run.id,
                    timeout=-1,  # runlane enforces timeout_s itself, per attempt
                    result_ttl=0,
                    failure_ttl=3600,
                    description=f"{run.task} {run.id}",
                )
                for run in batch
            ],
            pipeline=pipe,
        )
    nudge_relay(pipe, keys)  # every dispatch follows a commit that wrote a run.queued event
    if pipeline is None:
        pipe.execute()
    return sum(len(batch) for batch in by_queue.values())


def nudge_relay(target: Redis | Pipeline, keys: Keys) -> None:
    """Wake the relay after a commit that wrote events (see Keys.relay_nudge)."""
    target.xadd(keys.relay_nudge, {"n": 1}, maxlen=1, approximate=False)


def request_stops(target: Redis | Pipeline, keys: Keys, runs: Iterable[Run]) -> None:
    """Ask the running attempts of these runs (their cancel requested in Postgres) to stop now:
    their workers poll these flags every few hundred ms, and otherwise learn of the request from
    Postgres at their next lease renewal."""
    for run in runs:
        target.set(keys.cancel(run.id, run.attempt), "1", ex=CANCEL_FLAG_TTL_S)
