"""Idempotency keys (CONTRACT §2): an atomic claim in Redis and the first response kept for replay.

Redis is only the fast path: when it has lost a key (or is down), the unique (tenant, key) of the
runs table still refuses a second run, and app.web.submit compares the stored request fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis import Redis, RedisError
from redis.client import Pipeline

from app import logs
from app.redis_keys import IDEMPOTENCY_CLAIM, IDEMPOTENCY_RELEASE, IDEMPOTENCY_STORE, Keys
from app.web.errors import ApiError

KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,255}")
# How long a claimed key stays "in flight" if its request dies before storing a response.
LEASE_MS = 30_000
RETRY_AFTER_S = 1
log = logs.get("runlane.idempotency")


def parse_key(raw: str | None) -> str | None:
    """The Idempotency-Key header: absent, or 1-255 printable ASCII characters (else 400)."""
    if raw is None:
        return None
    if not KEY_PATTERN.fullmatch(raw):
        raise ApiError(
            400,
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            slug="bad-idempotency-key",
        )
    return raw


def canonical_json(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same": method, path and the body compared canonically."""
    text = f"{method.upper()} {path}\n{canonical_json(body)}"
    return hashlib.sha256(text.encode()).hexdigest()


class Claim(Enum):
    CLAIMED = "claimed"  # this request owns the key: go on and create the run
    REPLAY = "replay"  # a response is stored for this very request
    IN_FLIGHT = "in_flight"  # the same request is being served right now
    MISMATCH = "mismatch"  # the key was used for a different request
    UNAVAILABLE = "unavailable"  # Redis cannot say: rely on Postgres alone


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    status: int = 0
    body: bytes = b""


class IdempotencyStore:
    """The Redis side; built once per app so the scripts are registered (EVALSHA) only once."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = ttl_s * 1000
        self._claim = redis.register_script(IDEMPOTENCY_CLAIM)
        self._store = redis.register_script(IDEMPOTENCY_STORE)
        self._release = redis.register_script(IDEMPOTENCY_RELEASE)

    def claim(self, tenant: str, key: str, fp: str) -> Outcome:
        try:
            reply = self._claim(keys=[self.keys.idempotency(tenant, key)], args=[fp, LEASE_MS])
        except RedisError as exc:
            log.warning("idempotency.redis_unavailable", extra={"error": type(exc).__name__})
            return Outcome(Claim.UNAVAILABLE)
        return _outcome(reply, fp)

    def store(
        self,
        tenant: str,
        key: str,
        fp: str,
        status: int,
        body: bytes,
        *,
        pipeline: Pipeline | None = None,
    ) -> None:
        """Keeps the response for replays. Given a `pipeline`, the command is only added to it,
        by SHA: the caller executes it, and if that raises NoScriptError (Redis restarted and
        forgot the script) stores again without a pipeline, which loads the script."""
        name = self.keys.idempotency(tenant, key)
        args: list[str | int | bytes] = [fp, status, body, self.ttl_ms]
        if pipeline is None:
            self._store(keys=[name], args=args)
        else:  # by SHA rather than the Script object, which would first ask SCRIPT EXISTS
            pipeline.evalsha(self._store.sha, 1, name, *args)

    def release(self, tenant: str, key: str, fp: str) -> None:
        """Frees a key claimed by a request that ended without creating a run (best effort)."""
        try:
            self._release(keys=[self.keys.idempotency(tenant, key)], args=[fp])
        except RedisError as exc:  # the lease expires on its own
            log.warning("idempotency.release_failed", extra={"error": type(exc).__name__})


def _outcome(reply: list[bytes | None], fp: str) -> Outcome:
    if reply[0] == b"claimed":
        return Outcome(Claim.CLAIMED)
    state, stored_fp, status, body = reply
    if stored_fp is None or stored_fp.decode() != fp:
        return Outcome(Claim.MISMATCH)
    if state != b"done" or status is None:
        return Outcome(Claim.IN_FLIGHT)
    return Outcome(Claim.REPLAY, int(status), body or b"")


def in_flight() -> ApiError:
    return ApiError(
        409,
        "a request with this Idempotency-Key is still in progress; retry later",
        slug="idempotency-in-flight",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def mismatch() -> ApiError:
    return ApiError(
        422,
        "this Idempotency-Key was used with a different request",
        slug="idempotency-key-reuse",
    )
