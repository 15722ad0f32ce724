"""Queue limits (contract §5.1): how many of a tenant's attempts in a queue may run at once and
start per window, in all and per limit_key.

Postgres holds and enforces them (migration 0007): the claim admits or holds each popped run, the
transaction that ends an attempt releases what its slot lets start (app.attempts.commit), and the
scheduler releases what a reopened rate window does (release_due). Setting limits is the state
change here; it releases at once whatever the new limits let start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.db import q
from app.domain import Run
from app.runs import Conn


@dataclass(frozen=True)
class Rate:
    limit: int
    period_s: float


@dataclass(frozen=True)
class Limits:
    """A queue's limits for one tenant; None: no such limit."""

    concurrency: int | None = None
    rate: Rate | None = None
    key_concurrency: int | None = None
    key_rate: Rate | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Limits:
        return cls(
            concurrency=row["concurrency"],
            rate=_rate(row["rate_limit"], row["rate_period_s"]),
            key_concurrency=row["key_concurrency"],
            key_rate=_rate(row["key_rate_limit"], row["key_rate_period_s"]),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def none(self) -> bool:
        return self == Limits()


NO_LIMITS = Limits()


def queue_limits(conn: Conn, tenant: str, queue: str | None = None) -> dict[str, Limits]:
    """The tenant's limits per queue (one queue, or all of its limited queues)."""
    rows = conn.execute(q("queue_limits"), {"tenant": tenant, "queue": queue})
    return {row["queue"]: Limits.from_row(row) for row in rows}


def set_limits(
    conn: Conn, tenant: str, queue: str, changes: Mapping[str, Any]
) -> tuple[Limits, list[Run]]:
    """Change some of a queue's limits (a field given as None removes that limit; the others
    stay). They hold from the next start on: running attempts are never stopped. Returns the
    limits and the held runs they now let start, which the caller enqueues."""
    params = {"tenant": tenant, "queue": queue}
    with conn.transaction():
        row = conn.execute(q("lock_queue_limits"), params).fetchone()
        limits = dataclasses.replace(Limits.from_row(row) if row else NO_LIMITS, **changes)
        if limits.none:
            conn.execute(q("delete_queue_limits"), params)
        else:
            conn.execute(q("put_queue_limits"), {**params, **_columns(limits)})
        released = [Run.from_row(row) for row in conn.execute(q("release_queue"), params)]
    return limits, released


def release_due(conn: Conn) -> list[Run]:
    """Held runs of queues whose rate windows have reopened, now released (to enqueue)."""
    with conn.transaction():
        return [Run.from_row(row) for row in conn.execute(q("release_due"))]


def next_release_due(conn: Conn) -> datetime | None:
    row = conn.execute(q("next_release_due")).fetchone()
    return row["due"] if row else None


def prune_starts(conn: Conn) -> None:
    """Forget starts that no rate window counts any more."""
    conn.execute(q("prune_limit_starts"))


def held_counts(conn: Conn) -> list[tuple[str, str, str, int]]:
    """(tenant, queue, reason, runs) for the runs limits hold back now."""
    rows = conn.execute(q("held_counts"))
    return [(row["tenant"], row["queue"], row["reason"], row["n"]) for row in rows]


def _rate(limit: int | None, period_s: float | None) -> Rate | None:
    return Rate(limit, period_s) if limit is not None and period_s is not None else None


def _columns(limits: Limits) -> dict[str, Any]:
    rate, key_rate = limits.rate, limits.key_rate
    return {
        "concurrency": limits.concurrency,
        "rate_limit": rate.limit if rate else None,
        "rate_period_s": rate.period_s if rate else None,
        "key_concurrency": limits.key_concurrency,
        "key_rate_limit": key_rate.limit if key_rate else None,
        "key_rate_period_s": key_rate.period_s if key_rate else None,
    }
