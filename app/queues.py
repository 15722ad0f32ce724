"""Queue pauses and counts, per tenant: pausing and resuming are the named state changes here.

A pause is a row of queue_pauses, so it survives restarts of every process; workers honour it at
their claim (runs.sql claim_attempt), and tenants never affect each other's queues.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from app.db import q
from app.domain import Run
from app.runs import Conn


def pause_queue(conn: Conn, tenant: str, queue: str) -> None:
    """Nothing new of the tenant's in this queue starts; running attempts finish. Idempotent."""
    conn.execute(q("pause_queue"), {"tenant": tenant, "queue": queue})


def resume_queue(conn: Conn, tenant: str, queue: str) -> list[Run]:
    """Unpause; returns the tenant's queued runs of the queue, for the caller to dispatch again
    (workers dropped the RQ jobs they popped while it was paused)."""
    params = {"tenant": tenant, "queue": queue}
    # Two autocommit statements, not one transaction: the pause is gone (committed) before the
    # runs are read, so a run a worker dropped up to that moment is among them, and from then on
    # workers claim rather than drop.
    conn.execute(q("resume_queue"), params)
    return [Run.from_row(row) for row in conn.execute(q("queued_in_queue"), params)]


def run_counts(conn: Conn, tenant: str, queue: str | None = None) -> dict[str, Counter[str]]:
    """The tenant's runs per queue and status (one queue, or all when `queue` is None)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in conn.execute(q("queue_counts"), {"tenant": tenant, "queue": queue}):
        counts[row["queue"]][row["status"]] = row["n"]
    return counts


def paused_queues(conn: Conn, tenant: str, queue: str | None = None) -> set[str]:
    """The tenant's paused queues (`queue` alone, or all when it is None)."""
    rows = conn.execute(q("queue_pauses"), {"tenant": tenant, "queue": queue})
    return {row["queue"] for row in rows}
