"""The idempotent submit of POST /v1/runs (CONTRACT §2), the one place its protocol lives.

Claim the Idempotency-Key in Redis, create the run in Postgres, then dispatch it to RQ and store
the response for replays in one pipeline. A refusal releases the claim; when Redis has lost the
key or is down, the unique (tenant, idempotency_key) of the runs table still allows one run only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis, RedisError
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from app import dedupe, dispatch, logs, runs
from app.domain import Run, RunStatus
from app.redis_keys import Keys
from app.services import Services
from app.web import idempotency
from app.web.idempotency import Claim, IdempotencyStore

log = logs.get("runlane.web")


@dataclass(frozen=True)
class Ports:
    """What a submit touches: Postgres through `create_run`, Redis for the key and the dispatch."""

    # app.dedupe.create_run on a connection: (the new run, True), or (the run that answers, False)
    create_run: Callable[[runs.NewRun], tuple[Run, bool]]
    redis: Redis
    keys: Keys
    store: IdempotencyStore
    show: Callable[[Run], dict[str, Any]] = Run.to_json  # the run as its answer shows it

    @classmethod
    def of(
        cls, services: Services, store: IdempotencyStore, show: Callable[[Run], dict[str, Any]]
    ) -> Ports:
        def create_run(new: runs.NewRun) -> tuple[Run, bool]:
            with services.pool.connection() as conn:
                return dedupe.create_run(conn, new)

        return cls(create_run, services.redis, services.keys, store, show)


@dataclass(frozen=True)
class SubmitResult:
    """The response to send: `body` is exactly what the first response sent, replays included."""

    status: int
    body: bytes
    replayed: bool
    run: Run | None  # None for a replay from Redis, which keeps only the response

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
    claim = _claim(ports.store, new)
    if claim.claim is Claim.REPLAY:
        return SubmitResult(claim.status, claim.body, replayed=True, run=None)
    claimed = claim.claim is Claim.CLAIMED
    try:
        run, created = ports.create_run(new)
    except BaseException:
        if claimed:  # no run was created: the key must stay usable
            _release(ports.store, new)
        raise
    if not created and _holds_the_key(run, new):
        return _existing(ports, run, new, claimed=claimed)
    if not created:
        return _deduplicated(ports, run, new, claimed=claimed)
    body = _dump(ports.show(run))
    _dispatch_and_store(ports, run, new, body, claimed=claimed)
    return SubmitResult(201, body, replayed=False, run=run)


def _claim(store: IdempotencyStore, new: runs.NewRun) -> idempotency.Outcome:
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
    store: IdempotencyStore, new: runs.NewRun, run: Run, body: bytes, status: int
) -> None:
    """Store the answer for the Idempotency-Key; if Redis fails, the claim's lease runs out and
    the key's next request is answered from Postgres again."""
    try:
        _store(store, new, body, status=status)
    except RedisError as exc:
        log.warning("idempotency.store_failed", extra={"run_id": run.id, "error": str(exc)})


def _dispatch_and_store(
    ports: Ports, run: Run, new: runs.NewRun, body: bytes, *, claimed: bool
) -> None:
    """Hands the run to RQ and stores the idempotent response, in one round trip.

    Delayed runs are not enqueued: the scheduler promotes them when due. If Redis fails here the
    run is committed anyway, and the scheduler's sweep dispatches runs that never reached RQ.
    """
    pipe = ports.redis.pipeline(transaction=False)
    try:
        if run.status is RunStatus.QUEUED:  # (RQ asks Redis its version once per client)
            dispatch.enqueue(ports.redis, ports.keys, [run], pipeline=pipe)
        if claimed:
            _store(ports.store, new, body, pipeline=pipe)
        try:
            pipe.execute()
        except NoScriptError:  # Redis restarted and forgot the script; the other commands ran
            _store(ports.store, new, body)
    except RedisError as exc:
        log.warning("submit.redis_failed", extra={"run_id": run.id, "error": str(exc)})


def _store(
    store: IdempotencyStore,
    new: runs.NewRun,
    body: bytes,
    *,
    status: int = 201,
    pipeline: Pipeline | None = None,
) -> None:
    key, fp = str(new.idempotency_key), str(new.request_fingerprint)
    store.store(new.tenant, key, fp, status, body, pipeline=pipeline)


def _release(store: IdempotencyStore, new: runs.NewRun) -> None:
    store.release(new.tenant, str(new.idempotency_key), str(new.request_fingerprint))


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
