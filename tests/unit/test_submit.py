"""The idempotent submit (app.web.submit): claim, create, dispatch and store, release, replay —
on fakeredis, with Postgres's runs table as a small fake holding one run per key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import fakeredis
import pytest

from app.domain import Run, RunStatus
from app.redis_keys import Keys
from app.runs import NewRun
from app.web.errors import ApiError
from app.web.idempotency import LEASE_MS, Claim, IdempotencyStore
from app.web.submit import Made, Ports, submit
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


class FakeRuns:
    """Ports.create_run's contract: a new run (queued: to dispatch), or the run holding the key,
    not created."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], Run] = {}
        self.created: list[Run] = []
        self.before: Callable[[], None] = lambda: None  # what happens while the insert runs

    def create_run(self, new: NewRun) -> Made:
        self.before()
        if new.idempotency_key is not None and (new.tenant, new.idempotency_key) in self.runs:
            return Made(self.runs[(new.tenant, new.idempotency_key)], created=False)
        run = _run(new)
        self.created.append(run)
        if new.idempotency_key is not None:
            self.runs[(new.tenant, new.idempotency_key)] = run
        return Made(run, True, [run])


def _run(new: NewRun) -> Run:
    now = datetime.now(UTC)
    return Run(
        id=str(uuid.uuid4()),
        tenant=new.tenant,
        task=new.task,
        queue=new.queue,
        status=RunStatus.DELAYED if new.delayed else RunStatus.QUEUED,
        input=new.input,
        result=None,
        error=None,
        attempt=0,
        max_attempts=new.max_attempts,
        priority=new.priority,
        progress=None,
        metadata=new.metadata,
        idempotency_key=new.idempotency_key,
        created_at=now,
        scheduled_for=new.scheduled_for or now,
        started_at=None,
        finished_at=None,
        last_seq=1,
        request_fingerprint=new.request_fingerprint,
    )


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def pg() -> FakeRuns:
    return FakeRuns()


@pytest.fixture
def ports(server: fakeredis.FakeServer, pg: FakeRuns) -> Ports:
    redis = fakeredis.FakeRedis(server=server)
    keys = Keys("t")
    return Ports(pg.create_run, redis, keys, IdempotencyStore(redis, keys, ttl_s=60))


def queued_jobs(ports: Ports, run: Run) -> list[bytes]:
    return ports.redis.lrange(f"rq:queue:{ports.keys.rq_queue(run.queue, run.priority)}", 0, -1)


def test_a_first_submit_creates_dispatches_and_stores_the_response(
    ports: Ports, pg: FakeRuns
) -> None:
    first = submit(ports, NEW)
    assert (first.status, first.replayed) == (201, False)
    assert first.run is not None and first.run_id == first.run.id
    assert queued_jobs(ports, first.run) == [first.run.id.encode()]
    # Redis was fresh, so the store's EVALSHA in the pipeline found no script: it was stored again
    assert ports.store.claim("alpha", "k", "fp1").claim is Claim.REPLAY

    again = submit(ports, NEW)
    assert (again.status, again.body, again.replayed, again.run) == (201, first.body, True, None)
    assert again.run_id == first.run.id
    assert len(pg.created) == 1
    assert ports.redis.pttl(ports.keys.idempotency("alpha", "k")) > LEASE_MS


def test_without_a_key_every_submit_is_a_new_run(ports: Ports, pg: FakeRuns) -> None:
    unkeyed = replace(NEW, idempotency_key=None, request_fingerprint=None)
    a, b = submit(ports, unkeyed), submit(ports, unkeyed)
    assert not a.replayed and not b.replayed and a.run_id != b.run_id
    assert len(pg.created) == 2
    assert list(ports.redis.scan_iter(match=ports.keys.idempotency("alpha", "*"))) == []


def test_the_same_request_in_flight_is_409_and_creates_nothing(ports: Ports, pg: FakeRuns) -> None:
    ports.store.claim("alpha", "k", "fp1")
    with pytest.raises(ApiError) as caught:
        submit(ports, NEW)
    assert caught.value.status == 409
    assert int(caught.value.headers["Retry-After"]) >= 1
    assert pg.created == []


def test_another_request_with_the_key_is_422(ports: Ports, pg: FakeRuns) -> None:
    submit(ports, NEW)
    with pytest.raises(ApiError) as caught:
        submit(ports, replace(NEW, request_fingerprint="fp2"))
    assert caught.value.status == 422
    assert len(pg.created) == 1


def test_a_failed_insert_releases_the_key(ports: Ports, pg: FakeRuns) -> None:
    def refuse() -> None:
        raise RuntimeError("Postgres refused")

    pg.before = refuse
    with pytest.raises(RuntimeError):
        submit(ports, NEW)
    pg.before = lambda: None
    created = submit(ports, NEW)
    assert not created.replayed and len(pg.created) == 1


def test_when_redis_lost_the_key_postgres_gives_the_same_run(
    ports: Ports, pg: FakeRuns, server: fakeredis.FakeServer
) -> None:
    first = submit(ports, NEW)
    ports.redis.flushall()
    again = submit(ports, NEW)
    assert (again.status, again.body, again.replayed) == (201, first.body, True)
    assert again.run == first.run
    assert ports.store.claim("alpha", "k", "fp1").claim is Claim.REPLAY  # kept in Redis again
    assert queued_jobs(ports, again.run) == []  # an existing run is not dispatched again
    assert len(pg.created) == 1


def test_when_redis_lost_the_key_another_request_is_422_and_frees_it(
    ports: Ports, pg: FakeRuns
) -> None:
    first = submit(ports, NEW)
    ports.redis.flushall()
    with pytest.raises(ApiError) as caught:
        submit(ports, replace(NEW, request_fingerprint="fp2"))
    assert caught.value.status == 422
    assert ports.store.claim("alpha", "k", "fp1").claim is Claim.CLAIMED  # released
    ports.store.release("alpha", "k", "fp1")
    assert submit(ports, NEW).run == first.run


def test_with_redis_down_postgres_alone_keeps_the_key(
    ports: Ports, pg: FakeRuns, server: fakeredis.FakeServer
) -> None:
    server.connected = False
    first = submit(ports, NEW)
    assert (first.status, first.replayed) == (201, False)
    again = submit(ports, NEW)
    assert (again.replayed, again.run_id, again.body) == (True, first.run_id, first.body)
    with pytest.raises(ApiError) as caught:
        submit(ports, replace(NEW, request_fingerprint="fp2"))
    assert caught.value.status == 422
    assert len(pg.created) == 1


def test_redis_down_after_the_claim_still_answers_with_the_committed_run(
    ports: Ports, pg: FakeRuns, server: fakeredis.FakeServer
) -> None:
    pg.before = lambda: setattr(server, "connected", False)
    first = submit(ports, NEW)
    assert (first.status, first.replayed) == (201, False)
    assert first.run is not None and first.run.status is RunStatus.QUEUED  # the sweep sends it
    server.connected, pg.before = True, lambda: None
    assert queued_jobs(ports, first.run) == []
    with pytest.raises(ApiError) as caught:  # the claim holds until its lease runs out
        submit(ports, NEW)
    assert caught.value.status == 409
    ports.redis.delete(ports.keys.idempotency("alpha", "k"))  # as the lease's expiry would
    assert submit(ports, NEW).run == first.run
    assert len(pg.created) == 1


def test_a_delayed_run_is_stored_but_not_dispatched(ports: Ports) -> None:
    delayed = submit(
        ports, replace(NEW, delayed=True, scheduled_for=datetime(2999, 1, 1, tzinfo=UTC))
    )
    assert delayed.run is not None and delayed.run.status is RunStatus.DELAYED
    assert queued_jobs(ports, delayed.run) == []
    assert ports.store.claim("alpha", "k", "fp1").claim is Claim.REPLAY


@pytest.mark.parametrize("key", ["k2", None])
def test_after_the_insert_dispatch_and_store_are_one_round_trip(
    ports: Ports, pg: FakeRuns, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    submit(ports, replace(NEW, idempotency_key="warm-up"))  # the store's script is loaded
    trips: list[str] = []
    # RQ caches the server version (INFO) on a real client, but fakeredis drops it;
    # tests/integration/test_submit.py counts on real Redis, INFO included
    count_round_trips(ports, monkeypatch, trips, skip=("INFO",))
    pg.before = lambda: trips.append("insert")
    result = submit(ports, replace(NEW, idempotency_key=key))
    assert not result.replayed
    claim = ["EVALSHA"] if key else []
    assert trips == [*claim, "insert", "pipeline"]
