"""The live workers of a stack: RQ's worker registrations that heartbeat now, read from Redis.

One reading for every view of them (the queue counts and GET /v1/workers): a worker is live while
its last heartbeat is at most LIVENESS_S old, whatever its registration key's expiry says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from redis import Redis
from rq import worker_registration
from rq.utils import utcparse
from rq.worker import Worker

from app.db import q
from app.domain import rfc3339
from app.redis_keys import PRIORITIES, Keys

LIVENESS_S = 15  # a worker heartbeats every 5 s; a key this stale is a dead or stuck worker
# Runlane's own field in RQ's worker hash, written with the registration itself
CONCURRENCY_FIELD = "runlane_concurrency"


@dataclass(frozen=True)
class LiveWorker:
    name: str
    hostname: str | None
    pid: int | None
    queues: tuple[str, ...]  # runlane queue names, in the worker's order
    concurrency: int
    started_at: datetime | None
    last_heartbeat: datetime

    def to_json(self, running: list[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "started_at": rfc3339(self.started_at),
            "last_heartbeat": rfc3339(self.last_heartbeat),
            "running": running,
        }


def live_workers(redis: Redis, keys: Keys, now: datetime | None = None) -> list[LiveWorker]:
    """The workers serving at least one runlane queue of `keys`' stack and heartbeating now,
    by name. Raises RedisError when Redis is away: callers decide what that means to them."""
    worker_keys = sorted(worker_registration.get_keys(connection=redis))
    with redis.pipeline(transaction=False) as pipe:
        for key in worker_keys:
            pipe.hgetall(key)
        hashes = pipe.execute()
    gone = [key for key, fields in zip(worker_keys, hashes, strict=True) if not fields]
    if gone:  # expired registrations of killed workers, which RQ's own reader drops the same way
        redis.srem(Worker.redis_workers_keys, *gone)
    oldest = (now or datetime.now(UTC)) - timedelta(seconds=LIVENESS_S)
    found = (
        _worker(key, fields, keys.prefix) for key, fields in zip(worker_keys, hashes, strict=True)
    )
    return [w for w in found if w is not None and w.last_heartbeat >= oldest]


def per_queue(workers: list[LiveWorker]) -> dict[str, int]:
    """How many of these workers serve each queue."""
    counts: dict[str, int] = {}
    for worker in workers:
        for queue in worker.queues:
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def running_by_worker(
    conn: psycopg.Connection[Any], tenant: str, workers: list[LiveWorker]
) -> dict[str, list[str]]:
    """The ids of `tenant`'s runs running on each of these workers (other tenants' stay unseen)."""
    names = [w.name for w in workers]
    running: dict[str, list[str]] = {name: [] for name in names}
    if names:
        for row in conn.execute(q("running_on_workers"), {"tenant": tenant, "workers": names}):
            running[row["worker"]].append(str(row["id"]))
    return running


def _worker(key: str, raw: dict[bytes, bytes], prefix: str) -> LiveWorker | None:
    """A registration of this stack's with a heartbeat; None for a dead, foreign or torn one."""
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    if "death" in fields or not fields.get("last_heartbeat"):
        return None
    queues = runlane_queues(fields.get("queues", "").split(","), prefix)
    if not queues:
        return None
    return LiveWorker(
        name=key.removeprefix(Worker.redis_worker_namespace_prefix),
        hostname=fields.get("hostname") or None,
        pid=_int(fields.get("pid")),
        queues=queues,
        concurrency=_int(fields.get(CONCURRENCY_FIELD)) or 1,
        started_at=utcparse(fields["birth"]) if fields.get("birth") else None,
        last_heartbeat=utcparse(fields["last_heartbeat"]),
    )


def runlane_queues(rq_names: list[str], prefix: str) -> tuple[str, ...]:
    """The runlane queues behind RQ queue names `{prefix}.{queue}.p{priority}`, each once."""
    found = (_runlane_queue(name, prefix) for name in rq_names)
    return tuple(dict.fromkeys(name for name in found if name))


def _runlane_queue(rq_name: str, prefix: str) -> str | None:
    head = f"{prefix}."
    if not rq_name.startswith(head):
        return None
    queue, sep, priority = rq_name[len(head) :].rpartition(".p")
    if not sep or not queue or not priority.isdigit() or int(priority) not in PRIORITIES:
        return None
    return queue


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
