"""Scoped tokens (contract §9): read-only, expiring tokens for a browser, good for a list of runs
or one queue's runs, their events and their tails.

Stateless: the token is its scope, signed (itsdangerous, HMAC-SHA256) with the server's key, so
every web process checks it without a lookup, and none can be revoked before it expires (a day
at most). The key is RUNLANE_TOKEN_SECRET; without it, one derived from the API tokens, which
every web process of a deployment shares (changing them then ends every scoped token too).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, URLSafeSerializer

PREFIX = "rls_"  # tells a scoped token from an API token before any signature check
SALT = "runlane.scoped-token.v1"
MAX_TTL_S = 86_400


class Expired(Exception):
    """A scoped token whose signature holds but whose time is up."""


@dataclass(frozen=True)
class Scope:
    tenant: str
    runs: frozenset[str] | None  # these runs, or
    queue: str | None  # every run of this queue
    expires_at: float  # unix seconds

    def covers(self, run_id: str, queue: str) -> bool:
        if self.runs is not None:
            return run_id in self.runs
        return queue == self.queue

    @property
    def expires(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)


def key_of(secret: str | None, api_tokens: Mapping[str, str]) -> bytes:
    if secret:
        return secret.encode()
    material = "\n".join(sorted(f"{tenant}:{token}" for token, tenant in api_tokens.items()))
    return hashlib.sha256(b"runlane scoped tokens\n" + material.encode()).digest()


def mint(
    key: bytes,
    tenant: str,
    *,
    runs: list[str] | None = None,
    queue: str | None = None,
    ttl_s: int,
    now: float | None = None,
) -> tuple[str, Scope]:
    """A token for exactly one of `runs` and `queue`, good for `ttl_s` seconds."""
    assert (runs is None) != (queue is None) and 0 < ttl_s <= MAX_TTL_S
    expires_at = int((time.time() if now is None else now) + ttl_s)
    payload = {"t": tenant, "e": expires_at, **({"r": runs} if runs is not None else {"q": queue})}
    token = PREFIX + str(URLSafeSerializer(key, salt=SALT).dumps(payload))
    scope = Scope(tenant, frozenset(runs) if runs is not None else None, queue, expires_at)
    return token, scope


def read(key: bytes, token: str, *, now: float | None = None) -> Scope | None:
    """The token's scope; None when it is no scoped token of this key. Raises Expired."""
    if not token.startswith(PREFIX):
        return None
    try:
        payload = URLSafeSerializer(key, salt=SALT).loads(token[len(PREFIX) :])
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("t"), str):
        return None
    expires_at = payload.get("e")
    if not isinstance(expires_at, int):
        return None
    if expires_at <= (time.time() if now is None else now):
        raise Expired
    runs = payload.get("r")
    queue = payload.get("q")
    if isinstance(runs, list) and all(isinstance(r, str) for r in runs):
        return Scope(payload["t"], frozenset(runs), None, expires_at)
    if isinstance(queue, str):
        return Scope(payload["t"], None, queue, expires_at)
    return None
