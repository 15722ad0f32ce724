"""The idempotent submits of POST /v1/runs and /v1/runs/batch (CONTRACT §2, §5.5), the one place
their protocol lives.

Claim the Idempotency-Key in Redis, create the runs in Postgres, then dispatch them to RQ and
store the response for replays in one pipeline. A refusal releases the claim; when Redis has lost
the key or is down, Postgres still allows one creation only: the unique (tenant,
idempotency_key) of the runs table for a run (a flow: its root), batch_requests for a batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis import Redis, RedisError
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from app import dedupe, dispatch, flows, jsontext, logs, runs
from app.domain import Run, RunStatus
from app.redis_keys import Keys
from app.services import Services
from app.web import idempotency
from app.web.idempotency import Claim, IdempotencyStore

log = logs.get("runlane.web")
T = TypeVar("T")


class Keyed(Protocol):
    """A request that may carry an Idempotency-Key (a run to make, or a batch)."""

    @property
    def tenant(self) -> str: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def request_fingerprint(self) -> str | None: ...


@dataclass(frozen=True)
class Made:
    """What Postgres answered a submit: the run, whether it was made now (else it answers for
    the request: it holds the key), and every run made (a flow's children too)."""

    run: Run
    created: bool
    made: Sequence[Run] = ()


@dataclass(frozen=True)
class BatchRequest:
    tenant: str
    items: Sequence[flows.Node]
    idempotency_key: str | None
    request_fingerprint: str | None


@dataclass(frozen=True)
class Ports:
    """What a submit touches: Postgres through `create_run` and `create_batch`, Redis for the
    key and the dispatch."""

    create_run: Callable[[runs.NewRun], Made]
    redis: Redis
    keys: Keys
    store: IdempotencyStore
    show: Callable[[Run], dict[str, Any]] = Run.to_json  # the run as its answer shows it
    create_batch: Callable[[BatchRequest], flows.Batch] | None = None

    @classmethod
    def of(
        cls,
        services: Services,
        store: IdempotencyStore,
        show: Callable[[Run], dict[str, Any]],
        flow: flows.Node | None = None,
    ) -> Ports:
        """The ports of the service; `flow`: the run to make is that flow's root."""

        def create_run(new: runs.NewRun) -> Made:
            made: list[Run] = []
            create = flows.flow_creator(flow, made) if flow is not None else None
            with services.pool.connection() as conn:
                run, created = dedupe.create_run(conn, new, create)
            return Made(run, created, (made if flow is not None else [run]) if created else [])

        def create_batch(batch: BatchRequest) -> flows.Batch:
            with services.pool.connection() as conn:
                return flows.create_batch(
                    conn,
                    batch.tenant,
                    batch.items,
                    key=batch.idempotency_key,
                    fingerprint=batch.request_fingerprint,
                )

        return cls(create_run, services.redis, services.keys, store, show, create_batch)


@dataclass(frozen=True)
class SubmitResult:
    """The response to send: `body` is exactly what the first response sent, replays included."""

    status: int
    body: bytes
    replayed: bool
    run: Run | None  # None for a replay from Redis, which keeps only the response
    made: Sequence[Run] = ()  # the runs this request made, a flow's children and a batch's too

    @property
    def run_id(self) -> str:
        if self.run is not None:
            return self.run.id
        return str(json.loads(self.body).get("id", "")) if self.status in (200, 201) else ""


def submit(ports: Ports, new: runs.NewRun) -> SubmitResult:
    """Create `new` at most once per its `idempotency_key` (requests told apart by its
    `request_fingerprint`), or replay the first response; raises the ApiErrors 409 (that
    request still in flight) and 422 (the key was used for another request).

    The caller refuses bad requests before calling it, so that they never touch the key."""
    claim, made = _claimed(ports.store, new, lambda: ports.create_run(new))
    if made is None:
        return SubmitResult(claim.status, claim.body, replayed=True, run=None)
    claimed = claim.claim is Claim.CLAIMED
    run = made.run
    if not made.created and _holds_the_key(run, new):
        return _existing(ports, run, new, claimed=claimed)
    if not made.created:
        return _deduplicated(ports, run, new, claimed=claimed)
    body = _dump(ports.show(run))
    _dispatch_and_store(ports, made.made, new, body, claimed=claimed)
    return SubmitResult(201, body, replayed=False, run=run, made=made.made)


def submit_batch(ports: Ports, batch: BatchRequest) -> SubmitResult:
    """The batch's runs made at most once per its Idempotency-Key, as `submit` makes one run;
    the response lists them in the order of the items."""
    create = ports.create_batch
    assert create is not None
    claim, made = _claimed(ports.store, batch, lambda: create(batch))
    if made is None:
        return SubmitResult(claim.status, claim.body, replayed=True, run=None)
    claimed = claim.claim is Claim.CLAIMED
    if made.fingerprint is not None and made.fingerprint != batch.request_fingerprint:
        if claimed:
            _release(ports.store, batch)
        raise idempotency.mismatch()
    body = _dump({"items": [ports.show(run) for run in made.runs]})
    if made.fingerprint is not None:  # Redis had forgotten the key (or is down)
        if claimed:
            _store_or_let_lapse(ports.store, batch, made.runs[0], body, 201)
        return SubmitResult(201, body, replayed=True, run=None)
    _dispatch_and_store(ports, made.made, batch, body, claimed=claimed)
    return SubmitResult(201, body, replayed=False, run=None, made=made.made)


def _claimed(
    store: IdempotencyStore, new: Keyed, create: Callable[[], T]
) -> tuple[idempotency.Outcome, T | None]:
    """Claim the key, then `create` in Postgres: (the claim, what was made), or (the claim of
    a replay, None). A failure to create releases the claim: the key must stay usable."""
    claim = _claim(store, new)
    if claim.claim is Claim.REPLAY:
        return claim, None
    try:
        return claim, create()
    except BaseException:
        if claim.claim is Claim.CLAIMED:
            _release(store, new)
        raise


def _claim(store: IdempotencyStore, new: Keyed) -> idempotency.Outcome:
    """CLAIMED, REPLAY or UNAVAILABLE (no key, or Redis cannot say); the refusals raise."""
    if new.idempotency_key is None:
        return idempotency.Outcome(Claim.UNAVAILABLE)
    outcome = store.claim(new.tenant, new.idempotency_key, str(new.request_fingerprint))
    if outcome.claim is Claim.IN_FLIGHT:
        raise idempotency.in_flight()
    if outcome.claim is Claim.MISMATCH:
        raise idempotency.mismatch()
    return outcome


def _existing(ports: Ports, run: Run, new: runs.NewRun, *, claimed: bool) -> SubmitResult:
    """Redis had forgotten the key (or is down) but Postgres holds a run with it."""
    if run.request_fingerprint != new.request_fingerprint:
        if claimed:
            _release(ports.store, new)
        raise idempotency.mismatch()
    body = _dump(ports.show(run))
    if claimed:
        _store_or_let_lapse(ports.store, new, run, body, 201)
    return SubmitResult(201, body, replayed=True, run=run)


def _holds_the_key(run: Run, new: runs.NewRun) -> bool:
    """Whether the run that answered instead of a new one holds the request's Idempotency-Key
    (else it holds its dedupe key)."""
    return new.idempotency_key is not None and run.idempotency_key == new.idempotency_key


def _deduplicated(ports: Ports, run: Run, new: runs.NewRun, *, claimed: bool) -> SubmitResult:
    """A live run holds the dedupe key: 200 with it (debounced: with the new input), stored for
    the Idempotency-Key like any answer. Nothing to dispatch: that run was dispatched already,
    or is delayed and the scheduler promotes it."""
    body = _dump(ports.show(run))
    if claimed:
        _store_or_let_lapse(ports.store, new, run, body, 200)
    return SubmitResult(200, body, replayed=False, run=run)


def _store_or_let_lapse(
    store: IdempotencyStore, new: Keyed, run: Run, body: bytes, status: int
) -> None:
    """Store the answer for the Idempotency-Key; if Redis fails, the claim's lease runs out and
    the key's next request is answered from Postgres again."""
    try:
        _store(store, new, body, status=status)
    except RedisError as exc:
        log.warning("idempotency.store_failed", extra={"run_id": run.id, "error": str(exc)})


def _dispatch_and_store(
    ports: Ports, made: Sequence[Run], new: Keyed, body: bytes, *, claimed: bool
) -> None:
    """Hands the queued runs made to RQ and stores the idempotent response, in one round trip.

    Delayed and waiting runs are not enqueued: the scheduler promotes them when due, a flow's
    children queue their parent. If Redis fails here the runs are committed anyway, and the
    scheduler's sweep dispatches runs that never reached RQ.
    """
    queued = [run for run in made if run.status is RunStatus.QUEUED]
    pipe = ports.redis.pipeline(transaction=False)
    try:
        if queued:  # (RQ asks Redis its version once per client)
            dispatch.enqueue(ports.redis, ports.keys, queued, pipeline=pipe)
        else:  # nothing to enqueue, but the runs' first events are committed
            dispatch.nudge_relay(pipe, ports.keys)
        if claimed:
            _store(ports.store, new, body, pipeline=pipe)
        try:
            pipe.execute()
        except NoScriptError:  # Redis restarted and forgot the scripts; the other commands ran
            if queued:  # (a duplicate push is a no-op: the worker's claim fences it)
                dispatch.enqueue(ports.redis, ports.keys, queued)
            if claimed:
                _store(ports.store, new, body)
    except RedisError as exc:
        log.warning("submit.redis_failed", extra={"runs": len(queued), "error": str(exc)})


def _store(
    store: IdempotencyStore,
    new: Keyed,
    body: bytes,
    *,
    status: int = 201,
    pipeline: Pipeline | None = None,
) -> None:
    key, fp = str(new.idempotency_key), str(new.request_fingerprint)
    store.store(new.tenant, key, fp, status, body, pipeline=pipeline)


def _release(store: IdempotencyStore, new: Keyed) -> None:
    store.release(new.tenant, str(new.idempotency_key), str(new.request_fingerprint))


def _dump(value: dict[str, Any]) -> bytes:
    return jsontext.dumps(value)
