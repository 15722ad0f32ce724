"""app.web.submit on real Redis and Postgres: one run per key, whatever Redis does meanwhile."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from psycopg.errors import UntranslatableCharacter
from redis import Redis

from app.domain import Run, RunStatus
from app.runs import NewRun
from app.services import Services
from app.web.errors import ApiError
from app.web.idempotency import Claim, IdempotencyStore
from app.web.submit import Ports, submit
from runlane.embedded import free_port
from tests.helpers import count_round_trips

NEW = NewRun(
    tenant="alpha",
    task="demo.echo",
    queue="default",
    input={"n": 1},
    priority=5,
    max_attempts=1,
    backoff=None,
    timeout_s=None,
    metadata={},
    scheduled_for=None,
    idempotency_key="k",
    request_fingerprint="fp1",
)


@pytest.fixture
def own_redis(services: Services) -> Iterator[Redis]:
    """A Redis client of this test's own, which a test may cut off from the server."""
    redis = Redis.from_url(services.settings.redis_url or "", socket_connect_timeout=0.5)
    yield redis
    redis.close()
    jobs = [f"rq:job:{run_id}" for run_id in run_ids(services)]
    if jobs:  # the RQ jobs' keys are named by run id alone, not by the test's prefix
        services.redis.delete(*jobs)


def ports_on(
    services: Services, redis: Redis, *, before: Callable[[], None] | None = None
) -> Ports:
    """Ports on the test's database and on `redis`; `before` runs as the insert starts."""
    real = Ports.of(services, IdempotencyStore(redis, services.keys, 60), Run.to_json)

    def create_run(new: NewRun) -> tuple[Run, bool]:
        if before is not None:
            before()
        return real.create_run(new)

    return replace(real, create_run=create_run, redis=redis)


def cut_off(redis: Redis) -> None:
    """What Redis going down does to a client: its connections break and none can be made."""
    redis.connection_pool.connection_kwargs["port"] = free_port()
    redis.connection_pool.disconnect()
    redis.connection_pool.reset()  # the pool's next connections are made anew, to that port


def run_ids(services: Services) -> list[str]:
    with services.pool.connection() as conn:
        return [str(row["id"]) for row in conn.execute("SELECT id FROM runs ORDER BY created_at")]


def queued_jobs(services: Services) -> list[bytes]:
    name = f"rq:queue:{services.keys.rq_queue('default', 5)}"
    return list(services.redis.lrange(name, 0, -1))


def test_one_run_dispatched_and_its_response_replayed(services: Services, own_redis: Redis) -> None:
    ports = ports_on(services, own_redis)
    first = submit(ports, NEW)
    assert (first.status, first.replayed) == (201, False)
    assert run_ids(services) == [first.run_id]
    assert queued_jobs(services) == [first.run_id.encode()]
    again = submit(ports, NEW)
    assert (again.body, again.replayed, again.run_id) == (first.body, True, first.run_id)
    with pytest.raises(ApiError) as caught:
        submit(ports, replace(NEW, request_fingerprint="fp2"))
    assert caught.value.status == 422
    assert run_ids(services) == [first.run_id]


def test_a_keyed_submit_is_two_round_trips_to_redis(
    services: Services, own_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    ports = ports_on(services, own_redis, before=lambda: trips.append("insert"))
    submit(ports, replace(NEW, idempotency_key="warm-up"))  # RQ asks the server's version once
    trips.clear()
    count_round_trips(ports, monkeypatch, trips)
    submit(ports, NEW)
    assert trips == ["EVALSHA", "insert", "pipeline"]


def test_redis_down_after_the_claim(services: Services, own_redis: Redis) -> None:
    """The run is committed and answered; the key's claim waits out its lease, then Postgres
    answers for it; the scheduler's sweep dispatches the run RQ never got."""
    first = submit(ports_on(services, own_redis, before=lambda: cut_off(own_redis)), NEW)
    assert (first.status, first.replayed) == (201, False)
    assert first.run is not None and first.run.status is RunStatus.QUEUED
    assert queued_jobs(services) == []

    healthy = ports_on(services, services.redis)
    with pytest.raises(ApiError) as caught:
        submit(healthy, NEW)
    assert caught.value.status == 409
    services.redis.delete(services.keys.idempotency("alpha", "k"))  # as the lease's end does
    again = submit(healthy, NEW)
    assert (again.body, again.replayed, again.run_id) == (first.body, True, first.run_id)
    assert healthy.store.claim("alpha", "k", "fp1").claim is Claim.REPLAY
    assert run_ids(services) == [first.run_id]


def test_redis_down_throughout(services: Services, own_redis: Redis) -> None:
    cut_off(own_redis)
    ports = ports_on(services, own_redis)
    first = submit(ports, NEW)
    assert (first.status, first.replayed) == (201, False)
    again = submit(ports, NEW)
    assert (again.body, again.replayed) == (first.body, True)
    with pytest.raises(ApiError) as caught:
        submit(ports, replace(NEW, request_fingerprint="fp2"))
    assert caught.value.status == 422
    assert run_ids(services) == [first.run_id]


def test_redis_forgetting_the_key_in_the_middle(services: Services, own_redis: Redis) -> None:
    """Another request's run took the key while Redis forgot it: ours gets 422, no second run."""
    ours = ports_on(services, own_redis)
    theirs = replace(NEW, request_fingerprint="fp2")

    def race() -> None:
        services.redis.delete(services.keys.idempotency("alpha", "k"))
        submit(ours, theirs)

    with pytest.raises(ApiError) as caught:
        submit(ports_on(services, own_redis, before=race), NEW)
    assert caught.value.status == 422
    assert len(run_ids(services)) == 1
    assert ours.store.claim("alpha", "k", "fp2").claim is Claim.REPLAY


def test_postgres_refusing_the_run_leaves_the_key_unused(
    services: Services, own_redis: Redis
) -> None:
    ports = ports_on(services, own_redis)
    with pytest.raises(UntranslatableCharacter):
        submit(ports, replace(NEW, input={"text": "\x00"}))  # jsonb cannot hold a NUL
    assert run_ids(services) == []
    created = submit(ports, NEW)
    assert (created.status, created.replayed) == (201, False)
