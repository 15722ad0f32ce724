"""Queue pauses, counts and recent throughput, per tenant; pausing and resuming are its changes.

A pause is a row of queue_pauses, so it survives restarts of every process; workers honour it at
their claim (runs.sql claim_attempt), and tenants never affect each other's queues.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.db import q
from app.domain import Run, RunStatus, rfc3339
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


# Counts above this many runs of one queue and status are estimates: an exact count reads one
# index entry per run, so a count up to the cap reads at most cap + 1 per queue and status; at
# 1,000 GET /v1/queues answers in about 10 ms with a million runs in five queues (bench reads),
# at 10,000 it took 35 ms. Live statuses (queued, running, ...) are exact while below it.
COUNT_CAP = 1_000
RECENT_MINUTES = 10  # the throughput the overview shows: runs finished per minute, this far back
OUTCOMES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Counts:
    """One queue's runs per status; `estimated` names the statuses counted above the cap."""

    by_status: Counter[str]
    estimated: frozenset[str]


def run_counts(
    conn: Conn, tenant: str, queue: str | None = None, cap: int | None = None
) -> dict[str, Counts]:
    """The tenant's runs per queue and status (one queue, or all when `queue` is None): exact up
    to `cap` (COUNT_CAP), the planner's estimate above it."""
    params = {
        "tenant": tenant, "queue": queue, "cap": COUNT_CAP if cap is None else cap,
        "statuses": [status.value for status in RunStatus],
    }  # fmt: skip
    by_status: dict[str, Counter[str]] = defaultdict(Counter)
    estimated: dict[str, set[str]] = defaultdict(set)
    # unprepared, as list_runs: a generic plan could not drop the queue filter when it is NULL
    for row in conn.execute(q("queue_counts"), params, prepare=False):
        by_status[row["queue"]][row["status"]] = row["n"]
        if row["estimated"]:
            estimated[row["queue"]].add(row["status"])
    return {name: Counts(n, frozenset(estimated[name])) for name, n in by_status.items()}


@dataclass(frozen=True)
class Recent:
    """The tenant's runs finished per queue, minute and outcome over the last RECENT_MINUTES
    minutes, the one in progress last."""

    minutes: tuple[datetime, ...]  # each minute's start, oldest first
    finished: dict[str, dict[datetime, Counter[str]]]

    def to_json(self, queue: str) -> dict[str, Any]:
        seen = self.finished.get(queue, {})
        return {
            "window_s": 60 * len(self.minutes),
            "minutes": [
                {"at": rfc3339(at), **{o: seen.get(at, Counter())[o] for o in OUTCOMES}}
                for at in self.minutes
            ],
        }


def recent_finishes(
    conn: Conn, tenant: str, queue: str | None = None, now: datetime | None = None
) -> Recent:
    current = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    minutes = tuple(current - timedelta(minutes=n) for n in range(RECENT_MINUTES - 1, -1, -1))
    finished: dict[str, dict[datetime, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    params = {"tenant": tenant, "queue": queue, "since": minutes[0]}
    for row in conn.execute(q("queue_recent"), params, prepare=False):
        at = row["minute"].astimezone(UTC)
        if at in minutes:  # a run finished after `now` (clocks apart) is left out
            finished[row["queue"]][at][row["status"]] = row["n"]
    return Recent(minutes, finished)


def paused_queues(conn: Conn, tenant: str, queue: str | None = None) -> set[str]:
    """The tenant's paused queues (`queue` alone, or all when it is None)."""
    rows = conn.execute(q("queue_pauses"), {"tenant": tenant, "queue": queue})
    return {row["queue"] for row in rows}


def depths(conn: Conn) -> list[tuple[str, int, int]]:
    """(queue, queued, runnable) over every tenant, for /metrics: see queues.sql queue_depths."""
    rows = conn.execute(q("queue_depths")).fetchall()
    return [(row["queue"], row["queued"], row["runnable"]) for row in rows]
